"""kubeadm's addon phase, the workload controllers (deployment, replicaset, daemonset), the
scheduler's filters and the kubelet's host effects and network readiness.

Unit checks run in-process; the integration test runs the stand-in kube-apiserver (real TLS
etcd), kube-controller-manager, kube-scheduler and a kubelet (worker01, files relocated under
tmp_path) as processes and reads the result with the machine's real kubectl."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hactl.lab.standins import kubelet as kubelet_mod
from hactl.lab.standins import kubelet_network
from hactl.lab.standins.controller_placement import fit_failure, tolerates, unschedulable_message
from hactl.lab.standins.controller_workloads import daemon_tolerations
from hactl.lab.standins.kubeadm_addons import (
    apply_addons,
    coredns_objects,
    dns_ip,
    kube_proxy_objects,
)
from hactl.lab.standins.kubeadm_api import Api
from hactl.lab.standins.kubeadm_config import Config
from hactl.lab.standins.kubeapi import Client, ns_path

from .conftest import PY, REPO, Apiserver, Component, free_port, stop_pid, wait_for

NODE = "worker01"
NOT_READY_TAINT = {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}
CP_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
CNI_CONF = json.dumps({"name": "cbr0", "cniVersion": "0.3.1",
                       "plugins": [{"type": "flannel", "delegate": {"hairpinMode": True}},
                                   {"type": "portmap", "capabilities": {"portMappings": True}}]})
# the flannel DaemonSet's install steps, as in kube-flannel.yml (v0.25): the manifest's own
# contents decide what the kubelet does, not the names
FLANNEL_DS: dict[str, Any] = {
    "apiVersion": "apps/v1", "kind": "DaemonSet",
    "metadata": {"name": "kube-flannel-ds", "namespace": "kube-system", "labels": {"app": "flannel"}},
    "spec": {
        "selector": {"matchLabels": {"app": "flannel"}},
        "template": {
            "metadata": {"labels": {"app": "flannel"}},
            "spec": {
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}]}}},
                "hostNetwork": True,
                "priorityClassName": "system-node-critical",
                "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
                "initContainers": [
                    {"name": "install-cni-plugin", "image": "docker.io/flannel/flannel-cni-plugin:v1.4.1",
                     "command": ["cp"], "args": ["-f", "/flannel", "/opt/cni/bin/flannel"],
                     "volumeMounts": [{"name": "cni-plugin", "mountPath": "/opt/cni/bin"}]},
                    {"name": "install-cni", "image": "docker.io/flannel/flannel:v0.25.1",
                     "command": ["cp"], "args": ["-f", "/etc/kube-flannel/cni-conf.json",
                                                 "/etc/cni/net.d/10-flannel.conflist"],
                     "volumeMounts": [{"name": "cni", "mountPath": "/etc/cni/net.d"},
                                      {"name": "flannel-cfg", "mountPath": "/etc/kube-flannel/"}]}],
                "containers": [{"name": "kube-flannel", "image": "docker.io/flannel/flannel:v0.25.1",
                                "command": ["/opt/bin/flanneld"], "args": ["--ip-masq", "--kube-subnet-mgr"],
                                "volumeMounts": [{"name": "run", "mountPath": "/run/flannel"},
                                                 {"name": "flannel-cfg", "mountPath": "/etc/kube-flannel/"}]}],
                "volumes": [{"name": "run", "hostPath": {"path": "/run/flannel"}},
                            {"name": "cni-plugin", "hostPath": {"path": "/opt/cni/bin"}},
                            {"name": "cni", "hostPath": {"path": "/etc/cni/net.d"}},
                            {"name": "flannel-cfg", "configMap": {"name": "kube-flannel-cfg"}}],
            },
        },
    },
}


def _cfg() -> Config:
    cfg = Config()
    cfg.kubernetes_version = "v1.30.4"
    cfg.pod_subnet = "10.244.0.0/16"
    cfg.advertise_address = "127.0.0.1"
    return cfg


# -- unit -----------------------------------------------------------------------------------------

def test_addon_objects_are_kubeadms() -> None:
    assert dns_ip("10.96.0.0/12") == "10.96.0.10" and dns_ip("172.20.0.0/16") == "172.20.0.10"
    objs = {o["kind"]: o for _, o in coredns_objects(_cfg())}
    dep = objs["Deployment"]
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["selector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    pod = {"spec": dep["spec"]["template"]["spec"]}
    assert not fit_failure(pod, {"metadata": {"labels": {"kubernetes.io/os": "linux"}},
                                 "spec": {"taints": [CP_TAINT]}})
    assert fit_failure(pod, {"metadata": {"labels": {"kubernetes.io/os": "linux"}},
                             "spec": {"taints": [NOT_READY_TAINT]}}) == \
        "node(s) had untolerated taint {node.kubernetes.io/not-ready: }"
    assert objs["Service"]["spec"]["clusterIP"] == "10.96.0.10"
    proxy = {o["kind"]: o for _, o in kube_proxy_objects(_cfg())}
    spec = proxy["DaemonSet"]["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True and {"operator": "Exists"} in spec["tolerations"]
    assert "clusterCIDR: 10.244.0.0/16" in proxy["ConfigMap"]["data"]["config.conf"]


def test_tolerations_and_the_fit_error_text() -> None:
    assert tolerates({"operator": "Exists"}, NOT_READY_TAINT)
    assert tolerates({"operator": "Exists", "effect": "NoSchedule"}, NOT_READY_TAINT)
    assert not tolerates({"operator": "Exists", "effect": "NoExecute"}, NOT_READY_TAINT)
    assert not tolerates({"key": "a", "value": "1"}, {"key": "a", "value": "2", "effect": "NoSchedule"})
    assert tolerates({"key": "a", "value": "1"}, {"key": "a", "value": "1", "effect": "NoSchedule"})
    # daemon pods get the real controller's tolerations: NoExecute not-ready, but not NoSchedule
    added = daemon_tolerations({})
    assert not any(tolerates(t, NOT_READY_TAINT) for t in added)
    assert any(tolerates(t, {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}) for t in added)
    assert unschedulable_message(["node(s) had untolerated taint {node.kubernetes.io/not-ready: }"] * 3, 3) == (
        "0/3 nodes are available: 3 node(s) had untolerated taint {node.kubernetes.io/not-ready: }. "
        "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.")
    assert unschedulable_message(["b reason", "a reason", "b reason"], 3).startswith(
        "0/3 nodes are available: 1 a reason, 2 b reason.")


def test_cni_config_is_read_as_containerd_reads_it(tmp_path: Path) -> None:
    d = tmp_path / "net.d"
    assert kubelet_network.cni_status(str(d)) == (False, "cni plugin not initialized")
    d.mkdir()
    (d / "README").write_text("not a config")
    (d / "99-loopback.conf.bak").write_text("{}")
    assert kubelet_network.cni_status(str(d)) == (False, "cni plugin not initialized")
    (d / "10-flannel.conflist").write_text(CNI_CONF)
    assert kubelet_network.cni_status(str(d)) == (True, "")
    (d / "05-broken.conflist").write_text(json.dumps({"plugins": [{"type": "bridge"}]}))  # no name
    ready, error = kubelet_network.cni_status(str(d))  # the first file by name decides
    assert not ready and "no name" in error
    (d / "05-broken.conflist").unlink()
    (d / "01-net.conf").write_text(json.dumps({"name": "x"}))  # a .conf needs a type
    ready, error = kubelet_network.cni_status(str(d))
    assert not ready and error.startswith("network type not found in ")
    (d / "01-net.conf").write_text(json.dumps({"name": "x", "type": "bridge"}))
    assert kubelet_network.cni_status(str(d)) == (True, "")


def test_flannels_install_steps_copy_what_the_manifest_says(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HACTL_LAB_ROOT", str(tmp_path))
    logged: list[str] = []
    cms = {"kube-flannel-cfg": {"data": {"cni-conf.json": CNI_CONF, "net-conf.json": "{}"}}}
    effects = kubelet_network.HostEffects(lambda res, name: cms.get(name) if res == "configmaps" else None,
                                          logged.append)
    pod = {"metadata": {"name": "kube-flannel-ds-x"}, "spec": FLANNEL_DS["spec"]["template"]["spec"]}
    plugin, cni = pod["spec"]["initContainers"]
    effects.run_container(pod, plugin)  # /flannel is in the image: nothing to copy
    assert not (tmp_path / "opt/cni/bin/flannel").exists()
    assert any("/flannel is in the image" in line for line in logged)
    effects.run_container(pod, cni)
    assert (tmp_path / "etc/cni/net.d/10-flannel.conflist").read_text() == CNI_CONF
    assert kubelet_network.cni_status() == (True, "")
    # the same container with the ConfigMap missing its key fails as cp would
    cms["kube-flannel-cfg"] = {"data": {"net-conf.json": "{}"}}
    with pytest.raises(kubelet_network.EffectError, match=re.escape("cannot stat '/etc/kube-flannel/cni-conf.json'")):
        effects.run_container(pod, cni)
    # a ConfigMap that does not exist: the volume cannot be mounted
    del cms["kube-flannel-cfg"]
    with pytest.raises(kubelet_network.EffectError, match='configmap "kube-flannel-cfg" not found'):
        effects.run_container(pod, cni)
    # the main container (flanneld) has no host effect
    effects.run_container(pod, pod["spec"]["containers"][0])


def test_swap_and_node_ip_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HACTL_LAB_ROOT", str(tmp_path))
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/swaps").write_text("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n")
    assert kubelet_mod.swap_error({}, {}) == ""
    (tmp_path / "proc/swaps").write_text("Filename\tType\tSize\tUsed\tPriority\n"
                                         "/swapfile\tfile\t1048572\t0\t-2\n")
    assert kubelet_mod.swap_error({}, {}) == (
        "failed to run Kubelet: running with swap on is not supported, please disable swap! or set "
        "--fail-swap-on flag to false. /proc/swaps contained: [Filename\tType\tSize\tUsed\tPriority "
        "/swapfile\tfile\t1048572\t0\t-2]")
    assert kubelet_mod.swap_error({"failSwapOn": False}, {}) == ""
    assert kubelet_mod.swap_error({}, {"fail-swap-on": "false"}) == ""
    assert kubelet_mod.swap_error({"failSwapOn": False}, {"fail-swap-on": "true"}) != ""
    assert kubelet_mod.node_ip_error("198.51.100.7") == \
        "node IP: \"198.51.100.7\" not found in the host's network interfaces"
    assert kubelet_mod.node_ip_error("127.0.0.1") == ""  # loopback tests only (HACTL_LAB_ROOT)
    assert kubelet_mod.node_ip_error("169.254.1.1") == "nodeIP can't be a link-local unicast address"
    monkeypatch.delenv("HACTL_LAB_ROOT")
    assert kubelet_mod.node_ip_error("127.0.0.1") == "nodeIP can't be loopback address"


def test_a_kubelet_with_swap_on_exits_with_the_real_message(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/swaps").write_text("Filename\tType\tSize\tUsed\tPriority\n/dev/sda2\tpartition\t8\t0\t-2\n")
    (tmp_path / "config.yaml").write_text("kind: KubeletConfiguration\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), HACTL_LAB_ROOT=str(tmp_path))
    res = subprocess.run([PY, "-m", "hactl.lab.standins.kubelet", f"--config={tmp_path}/config.yaml"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 1
    assert 'err="failed to run Kubelet: running with swap on is not supported, please disable swap! ' \
        'or set --fail-swap-on flag to false. /proc/swaps contained: [' in res.stderr, res.stderr


# -- integration ----------------------------------------------------------------------------------

@pytest.fixture
def node_root(tmp_path: Path) -> Path:
    return tmp_path / "node"


@pytest.fixture
def cni() -> bool:
    """The node has a pod network (a CNI configuration); test_kubelet_notready's nodes do not."""
    return True


@pytest.fixture
def kubelet(apiserver: Apiserver, admin: Client, node_root: Path,
            cni: bool) -> Iterator[subprocess.Popen[bytes]]:
    root = node_root
    (root / "manifests").mkdir(parents=True)
    if cni:
        (root / "etc/cni/net.d").mkdir(parents=True)
        (root / "etc/cni/net.d/10-lab.conflist").write_text(
            json.dumps({"name": "lab", "cniVersion": "0.3.1", "plugins": [{"type": "bridge"}]}))
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({"staticPodPath": str(root / "manifests"), "healthzPort": free_port()}))
    conf = root / "kubelet.conf"
    conf.write_bytes(apiserver.pki.kubeconfig("kubelet-wl", apiserver.url, apiserver.pki.node).read_bytes())
    env = dict(os.environ, PYTHONPATH=str(REPO), HACTL_LAB_ROOT=str(root),
               KUBELET_KUBEADM_ARGS=f"--hostname-override={NODE} --node-ip=127.0.0.1")
    with open(root.parent / "kubelet.log", "ab") as out:
        proc = subprocess.Popen([PY, "-m", "hactl.lab.standins.kubelet", f"--config={config}",
                                 f"--kubeconfig={conf}"], stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd="/")
    try:
        wait_for(lambda: admin.find(f"/api/v1/nodes/{NODE}") is not None, 30, "node registered")
        yield proc
    finally:
        stop_pid(proc)


@pytest.fixture
def control(apiserver: Apiserver, tmp_path: Path) -> Iterator[None]:
    kcm = Component("kube_controller_manager",
                    apiserver.pki.kubeconfig("kcm-wl", apiserver.url, apiserver.pki.kcm), tmp_path,
                    "--leader-elect=false", "--node-monitor-period=1s").start()
    sched = Component("kube_scheduler",
                      apiserver.pki.kubeconfig("sched-wl", apiserver.url, apiserver.pki.scheduler), tmp_path,
                      "--leader-elect=false").start()
    try:
        yield
    finally:
        kcm.stop(signal.SIGKILL)
        sched.stop(signal.SIGKILL)


def _get(apiserver: Apiserver, *args: str) -> Any:
    return json.loads(apiserver.kubectl("get", *args, "-o", "json").stdout)


def test_addons_daemonsets_and_the_scheduler_end_to_end(
        apiserver: Apiserver, admin: Client, control: None, kubelet: subprocess.Popen[bytes],
        node_root: Path) -> None:
    api = Api.from_kubeconfig(str(apiserver.admin_conf))
    try:
        apply_addons(api, _cfg())
        apply_addons(api, _cfg())  # CreateOrUpdate: a second run changes nothing that fails
    finally:
        api.close()
    svc = _get(apiserver, "-n", "kube-system", "service", "kube-dns")
    assert svc["spec"]["clusterIP"] == "10.96.0.10"
    # kube-proxy runs on the node (host network, tolerates everything)
    wait_for(lambda: _get(apiserver, "-n", "kube-system", "ds", "kube-proxy").get("status", {}).get("numberReady") == 1,
             30, "kube-proxy ready on worker01")
    proxy = _get(apiserver, "-n", "kube-system", "pods", "-l", "k8s-app=kube-proxy")["items"]
    assert [p["spec"]["nodeName"] for p in proxy] == [NODE]
    assert proxy[0]["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"
    # CoreDNS: Deployment → ReplicaSet → 2 pods on the Ready node, Available
    wait_for(lambda: any(c["type"] == "Available" and c["status"] == "True" for c in
                         _get(apiserver, "-n", "kube-system", "deploy", "coredns")["status"].get("conditions", [])),
             40, "coredns Available")
    res = apiserver.kubectl("-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=30s")
    assert "successfully rolled out" in res.stdout
    dns = _get(apiserver, "-n", "kube-system", "pods", "-l", "k8s-app=kube-dns")["items"]
    assert len(dns) == 2 and {p["spec"]["nodeName"] for p in dns} == {NODE}

    # a taint nothing tolerates: a new pod stays Pending with the scheduler's real message
    apiserver.kubectl("taint", "node", NODE, "example.com/dedicated=db:NoSchedule")
    admin.create(ns_path("pods", "default"), {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                                              "spec": {"containers": [{"name": "c", "image": "x"}]}})
    want = ("0/1 nodes are available: 1 node(s) had untolerated taint {example.com/dedicated: db}. "
            "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.")

    def unschedulable() -> bool:
        conds = (admin.get(ns_path("pods", "default", "p")).get("status") or {}).get("conditions") or []
        return any(c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable"
                   and c.get("message") == want for c in conds)
    wait_for(unschedulable, 20, "PodScheduled=False Unschedulable")
    events = apiserver.kubectl("get", "events", "-n", "default", "--field-selector",
                               "reason=FailedScheduling", "-o", "jsonpath={.items[*].message}").stdout
    assert want in events
    apiserver.kubectl("taint", "node", NODE, "example.com/dedicated-")
    wait_for(lambda: admin.get(ns_path("pods", "default", "p"))["spec"].get("nodeName") == NODE, 20, "p bound")

    # a flannel-like DaemonSet: its install-cni init container copies the ConfigMap's CNI
    # configuration to the node's /etc/cni/net.d, its pod then runs
    admin.create(ns_path("configmaps", "kube-system"), {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-flannel-cfg"},
        "data": {"cni-conf.json": CNI_CONF, "net-conf.json": '{"Network": "10.244.0.0/16"}'}})
    admin.create(ns_path("daemonsets", "kube-system", None, "apps/v1"), FLANNEL_DS)
    wait_for(lambda: (node_root / "etc/cni/net.d/10-flannel.conflist").exists(), 30, "CNI config copied")
    assert (node_root / "etc/cni/net.d/10-flannel.conflist").read_text() == CNI_CONF
    wait_for(lambda: _get(apiserver, "-n", "kube-system", "ds", "kube-flannel-ds").get("status", {}).get("numberReady") == 1,
             30, "flannel pod ready")
    pod = _get(apiserver, "-n", "kube-system", "pods", "-l", "app=flannel")["items"][0]
    assert [s["state"]["terminated"]["reason"] for s in pod["status"]["initContainerStatuses"]] == \
        ["Completed", "Completed"]
    # deleting the DaemonSet's pod: the controller makes another one for the node
    apiserver.kubectl("-n", "kube-system", "delete", "pod", pod["metadata"]["name"], "--wait=true")
    wait_for(lambda: [p["metadata"]["name"] for p in _get(apiserver, "-n", "kube-system", "pods", "-l",
                                                           "app=flannel")["items"]
                      if p["metadata"]["name"] != pod["metadata"]["name"]] != [], 30, "a new flannel pod")
