"""Issue 14 §3 on the shared converged specs/lab.yaml lab: its bring-up installed flannel
(``+ network`` planned on the fresh lab, applied right after init): every master and worker
holds /etc/cni/net.d/10-flannel.conflist (written by the DaemonSet's install-cni init container
as the lab's kubelet runs it), every Node is Ready, CoreDNS is available and a second plan is
empty. A hand edit of flannel's net-conf.json on the cluster and a new flannel version in the
spec each plan ``~ network`` with the field that differs and apply; ``network.plugin: none`` on
the cluster that runs flannel is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

HACTL = [sys.executable, "-c", "from hactl.cli import main; main(prog_name='hactl')"]
KUBECTL = "kubectl --kubeconfig /etc/kubernetes/admin.conf "


def hactl(lab: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = lab.registry.env(lab)
    return subprocess.run([*HACTL, *args], capture_output=True, text=True, timeout=900, env=env,
                          check=False)


def show(res: subprocess.CompletedProcess[str]) -> str:
    return f"exit {res.returncode}\nstdout:\n{res.stdout[-6000:]}\nstderr:\n{res.stderr[-4000:]}"


def kubectl_json(lab: Any, args: str) -> Any:
    res = lab.run(lab.cluster.masters[0].name, KUBECTL + args + " -o json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_the_bring_up_installed_flannel_and_every_node_is_ready(shared_lab: Any) -> None:
    lab = shared_lab()
    nodes = [h.name for h in [*lab.cluster.masters, *lab.cluster.workers]]
    for name in nodes:
        res = lab.run(name, "cat /etc/cni/net.d/10-flannel.conflist")
        assert res.returncode == 0, f"{name}: {res.stderr}"
        assert json.loads(res.stdout)["plugins"][0]["type"] == "flannel"
    items = kubectl_json(lab, "get nodes")["items"]
    ready = {n["metadata"]["name"] for n in items
             if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])}
    assert ready == set(nodes)
    dns = kubectl_json(lab, "get deployment coredns -n kube-system")
    assert any(c["type"] == "Available" and c["status"] == "True" for c in dns["status"]["conditions"])
    ds = kubectl_json(lab, "get daemonset kube-flannel-ds -n kube-flannel --show-managed-fields")
    assert ds["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "hactl"
    assert any(m["manager"] == "hactl" and m["operation"] == "Apply" for m in ds["metadata"]["managedFields"])
    res = hactl(lab, "check", "-f", lab.spec_file)
    assert res.returncode == 0, show(res)
    assert "[ok  ] nodes: all: every Node Ready (5)" in res.stdout, show(res)
    assert "[ok  ] coredns: kube-system/coredns: available" in res.stdout, show(res)
    res = hactl(lab, "plan", "-f", lab.spec_file, "--detailed-exitcode")
    assert res.returncode == 0 and "No changes." in res.stdout, show(res)


def test_a_hand_edit_and_a_new_version_plan_a_field_diff_and_apply(shared_lab: Any) -> None:
    lab = shared_lab()
    cm = kubectl_json(lab, "get configmap kube-flannel-cfg -n kube-flannel")
    edited = cm["data"]["net-conf.json"].replace('"vxlan"', '"host-gw"')
    patch = json.dumps({"data": {"net-conf.json": edited}})
    res = lab.run(lab.cluster.masters[0].name,
                  KUBECTL + f"patch configmap kube-flannel-cfg -n kube-flannel --type merge -p '{patch}'")
    assert res.returncode == 0, res.stderr
    res = hactl(lab, "plan", "-f", lab.spec_file, "--detailed-exitcode")
    assert res.returncode == 2, show(res)
    assert "~ network" in res.stdout and "1 field(s) differ" in res.stdout, show(res)
    assert "ConfigMap/kube-flannel/kube-flannel-cfg .data.net-conf.json:" in res.stdout, show(res)
    assert "Install the pod network (flannel v0.25.7) via master01" in res.stdout, show(res)
    res = hactl(lab, "apply", "-f", lab.spec_file, "--auto-approve")
    assert res.returncode == 0 and "is healthy." in res.stdout, show(res)
    assert '"vxlan"' in kubectl_json(lab, "get configmap kube-flannel-cfg -n kube-flannel")["data"]["net-conf.json"]

    older = lab.write_spec(lambda d: d.setdefault("network", {}).update(version="v0.25.6"), "older")
    res = hactl(lab, "plan", "-f", older, "--detailed-exitcode")
    assert res.returncode == 2, show(res)
    assert 'docker.io/flannel/flannel:v0.25.7" -> "docker.io/flannel/flannel:v0.25.6"' in res.stdout, show(res)
    res = hactl(lab, "apply", "-f", older, "--auto-approve")
    assert res.returncode == 0, show(res)
    images = [c["image"] for c in kubectl_json(lab, "get daemonset kube-flannel-ds -n kube-flannel")[
        "spec"]["template"]["spec"]["containers"]]
    assert images == ["docker.io/flannel/flannel:v0.25.6"]
    res = hactl(lab, "plan", "-f", older, "--detailed-exitcode")
    assert res.returncode == 0 and "No changes." in res.stdout, show(res)


def test_plugin_none_on_a_cluster_running_flannel_is_refused(shared_lab: Any) -> None:
    lab = shared_lab()
    none = lab.write_spec(lambda d: d.setdefault("network", {}).update(plugin="none"), "none")
    res = hactl(lab, "plan", "-f", none)
    assert res.returncode == 1, show(res)
    assert "network.plugin is none" in res.stderr and "does not uninstall a CNI" in res.stderr, show(res)
    assert "DaemonSet/kube-flannel/kube-flannel-ds" in res.stderr, show(res)
