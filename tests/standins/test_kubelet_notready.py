"""A fresh node without a pod network, as on real hosts: the kubelet reports NotReady with
containerd's reason, the controller-manager taints the Node not-ready, CoreDNS stays Pending with
the scheduler's real message, host-network pods run and others wait; a CNI DaemonSet whose init
container copies its configuration to /etc/cni/net.d makes the Node Ready and CoreDNS available.
Real kubectl against the stand-ins (apiserver on a real etcd, controller-manager, scheduler,
kubelet as worker01 relocated under tmp_path)."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hactl.lab.standins import kubelet_network
from hactl.lab.standins.kubeadm_addons import apply_addons
from hactl.lab.standins.kubeadm_api import Api
from hactl.lab.standins.kubeapi import Client, ns_path

from .conftest import Apiserver, Component, wait_for
from .test_addons_workloads import CNI_CONF, FLANNEL_DS, NODE, _cfg, _get
from .test_addons_workloads import kubelet as kubelet
from .test_addons_workloads import node_root as node_root

NOT_READY = ("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
             "message:Network plugin returns error: cni plugin not initialized")


@pytest.fixture
def cni() -> bool:
    """A fresh node: no CNI configuration in /etc/cni/net.d."""
    return False


@pytest.fixture
def knobs(node_root: Path) -> Path:
    (node_root / "etc/hactl-lab").mkdir(parents=True)
    (node_root / "etc/hactl-lab/standins.yaml").write_text("kubelet:\n  heartbeatSeconds: 2\n")
    return node_root


@pytest.fixture
def control(apiserver: Apiserver, tmp_path: Path) -> Iterator[None]:
    kcm = Component("kube_controller_manager",
                    apiserver.pki.kubeconfig("kcm-nr", apiserver.url, apiserver.pki.kcm), tmp_path,
                    "--leader-elect=false", "--node-monitor-period=1s").start()
    sched = Component("kube_scheduler",
                      apiserver.pki.kubeconfig("sched-nr", apiserver.url, apiserver.pki.scheduler), tmp_path,
                      "--leader-elect=false").start()
    try:
        yield
    finally:
        kcm.stop(signal.SIGKILL)
        sched.stop(signal.SIGKILL)


def _ready(apiserver: Apiserver) -> dict[str, Any]:
    node = _get(apiserver, "node", NODE)
    return next(c for c in node["status"]["conditions"] if c["type"] == "Ready")


def test_no_pod_network_means_notready_until_a_cni_daemonset_installs_one(
        apiserver: Apiserver, admin: Client, knobs: Path, control: None,
        kubelet: subprocess.Popen[bytes]) -> None:
    assert kubelet_network.REQUIRE_CNI
    wait_for(lambda: _ready(apiserver).get("status") == "False", 20, "Ready=False")
    ready = _ready(apiserver)
    assert (ready["reason"], ready["message"]) == ("KubeletNotReady", NOT_READY)
    assert "NotReady" in apiserver.kubectl("get", "node", NODE).stdout
    wait_for(lambda: {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"} in
             _get(apiserver, "node", NODE)["spec"].get("taints", []), 20, "not-ready taint")

    api = Api.from_kubeconfig(str(apiserver.admin_conf))
    try:
        apply_addons(api, _cfg())
    finally:
        api.close()
    # kube-proxy (host network, tolerates everything) runs; CoreDNS stays Pending
    wait_for(lambda: _get(apiserver, "-n", "kube-system", "ds", "kube-proxy").get("status", {}).get("numberReady") == 1,
             30, "kube-proxy ready")
    want = ("0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }. "
            "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.")

    def dns_pending() -> bool:
        pods = _get(apiserver, "-n", "kube-system", "pods", "-l", "k8s-app=kube-dns")["items"]
        return len(pods) == 2 and all(
            p["status"].get("phase") == "Pending" and not p["spec"].get("nodeName") and any(
                c.get("reason") == "Unschedulable" and c.get("message") == want
                for c in p["status"].get("conditions", [])) for p in pods)
    wait_for(dns_pending, 30, "CoreDNS pods Pending, Unschedulable")
    wait_for(lambda: any(c["type"] == "Available" and c["status"] == "False" and
                         c["reason"] == "MinimumReplicasUnavailable" for c in
                         _get(apiserver, "-n", "kube-system", "deploy", "coredns").get("status", {})
                         .get("conditions", [])), 20, "coredns not Available")

    # a pod bound to the node but not on the host network waits for the network
    admin.create(ns_path("pods", "default"), {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
        "spec": {"nodeName": NODE, "containers": [{"name": "web", "image": "nginx"}]}})

    def creating() -> bool:
        st = admin.get(ns_path("pods", "default", "web")).get("status") or {}
        states = [c.get("state", {}).get("waiting", {}).get("reason") for c in st.get("containerStatuses", [])]
        return st.get("phase") == "Pending" and states == ["ContainerCreating"]
    wait_for(creating, 20, "web ContainerCreating")

    # the CNI DaemonSet (host network, tolerates NoSchedule) copies its configuration
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-flannel"}}
    admin.create("/api/v1/namespaces", ns)
    admin.create(ns_path("configmaps", "kube-flannel"), {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-flannel-cfg"},
        "data": {"cni-conf.json": CNI_CONF, "net-conf.json": '{"Network": "10.244.0.0/16"}'}})
    ds = json.loads(json.dumps(FLANNEL_DS))
    ds["metadata"]["namespace"] = "kube-flannel"
    admin.create(ns_path("daemonsets", "kube-flannel", None, "apps/v1"), ds)
    wait_for(lambda: _ready(apiserver).get("status") == "True", 40, "Ready=True after the CNI install")
    ready = _ready(apiserver)
    assert (ready["reason"], ready["message"]) == ("KubeletReady", "kubelet is posting ready status")
    assert (knobs / "etc/cni/net.d/10-flannel.conflist").read_text() == CNI_CONF
    wait_for(lambda: not any(t["key"] == "node.kubernetes.io/not-ready" for t in
                             _get(apiserver, "node", NODE)["spec"].get("taints", [])), 20, "taint gone")
    res = apiserver.kubectl("-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=40s")
    assert "successfully rolled out" in res.stdout
    wait_for(lambda: admin.get(ns_path("pods", "default", "web")).get("status", {}).get("phase") == "Running",
             20, "web Running")
