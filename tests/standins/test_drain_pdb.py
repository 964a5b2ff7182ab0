"""`kubectl drain` (the machine's real kubectl) against the stand-ins: the kube-apiserver's
eviction subresource with PodDisruptionBudgets, the controller-manager's disruption controller
computing their status, and a kubelet stand-in (its own process) running the pods of worker01
and finishing their graceful deletion. A real TLS etcd stores everything."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hactl.lab.standins.kubeapi import ApiError, Client, ns_path

from .conftest import PY, REPO, Apiserver, Component, free_port, stop_pid, wait_for

NODE = "worker01"
NO_ELECTION = ("--leader-elect=false",)
PDB = "/apis/policy/v1/namespaces/default/poddisruptionbudgets"


@pytest.fixture
def kubelet(apiserver: Apiserver, admin: Client, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The kubelet stand-in as node worker01 (client certificate system:node:worker01), its
    files relocated under tmp_path, on a node with a pod network (a CNI configuration in
    /etc/cni/net.d: the kubelet is Ready and starts pods that are not on the host network)."""
    root = tmp_path / "node"
    (root / "manifests").mkdir(parents=True)
    (root / "etc/cni/net.d").mkdir(parents=True)
    (root / "etc/cni/net.d/10-flannel.conflist").write_text(
        '{"name": "cbr0", "cniVersion": "0.3.1", "plugins": [{"type": "flannel"}]}')
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({"staticPodPath": str(root / "manifests"),
                                      "healthzPort": free_port()}))
    conf = root / "kubelet.conf"  # inside the relocated root, as the kubelet reads it
    conf.write_bytes(apiserver.pki.kubeconfig("kubelet-worker01", apiserver.url,
                                              apiserver.pki.node).read_bytes())
    env = dict(os.environ, PYTHONPATH=str(REPO), HACTL_LAB_ROOT=str(root),
               KUBELET_KUBEADM_ARGS=f"--hostname-override={NODE} --node-ip=127.0.0.1")
    log = tmp_path / "kubelet.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([PY, "-m", "hactl.lab.standins.kubelet", f"--config={config}",
                                 f"--kubeconfig={conf}"], stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd="/")
    try:
        wait_for(lambda: _ready_node(admin), 30, f"node {NODE} Ready ({log})")
        yield proc
    finally:
        stop_pid(proc)


@pytest.fixture
def kcm(apiserver: Apiserver, tmp_path: Path) -> Iterator[Component]:
    conf = apiserver.pki.kubeconfig("kcm-drain", apiserver.url, apiserver.pki.kcm)
    # these tests count the pods a drain leaves: without the ReplicaSet controller (which, as
    # for real, would re-create every evicted pod)
    comp = Component("kube_controller_manager", conf, tmp_path, *NO_ELECTION,
                     "--controllers=*,-replicaset").start()
    try:
        yield comp
    finally:
        comp.stop(signal.SIGKILL)


def _ready_node(admin: Client) -> bool:
    node = admin.find(f"/api/v1/nodes/{NODE}")
    return node is not None and any(c.get("type") == "Ready" and c.get("status") == "True"
                                    for c in node.get("status", {}).get("conditions", []))


def _owner(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": kind, "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def replicaset(admin: Client, name: str, pods: int, replicas: int | None = None,
               node: str = NODE) -> list[str]:
    """A ReplicaSet and ``pods`` pods it controls, bound to ``node`` (no ReplicaSet controller
    runs in the lab: the test makes the pods the controller would make)."""
    labels = {"app": name}
    rs = admin.create("/apis/apps/v1/namespaces/default/replicasets", {
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name,
                                                                   "labels": labels},
        "spec": {"replicas": pods if replicas is None else replicas,
                 "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "app", "image": "pause"}]}}}})
    names = [f"{name}-{i}" for i in range(pods)]
    for pod in names:
        admin.create(ns_path("pods", "default"), {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "labels": labels, "ownerReferences": [_owner("ReplicaSet", rs)]},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "pause"}]}})
    return names


def pdb(admin: Client, name: str, app: str, **spec: Any) -> dict[str, Any]:
    return dict(admin.create(PDB, {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                                   "metadata": {"name": name},
                                   "spec": {"selector": {"matchLabels": {"app": app}}, **spec}}))


def pdb_status(admin: Client, name: str) -> dict[str, Any]:
    return dict(admin.get(f"{PDB}/{name}").get("status") or {})


def wait_pdb(admin: Client, name: str, **want: int) -> dict[str, Any]:
    got: dict[str, Any] = {}

    def check() -> bool:
        nonlocal got
        got = pdb_status(admin, name)
        obj = admin.get(f"{PDB}/{name}")
        return got.get("observedGeneration") == obj["metadata"].get("generation") and all(
            got.get(k) == v for k, v in want.items())

    try:
        wait_for(check, 20, f"PDB {name} status {want}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: last status {got}") from None
    return got


def running(admin: Client, names: list[str]) -> Callable[[], bool]:
    def check() -> bool:
        for name in names:
            pod = admin.find(ns_path("pods", "default", name))
            if pod is None or pod.get("status", {}).get("phase") != "Running":
                return False
        return True
    return check


def pods_left(admin: Client) -> list[str]:
    return sorted(p["metadata"]["name"] for p in admin.get(ns_path("pods", "default"))["items"])


DRAIN = ("drain", NODE, "--ignore-daemonsets", "--delete-emptydir-data")


def test_the_kubelet_runs_bound_pods_and_finishes_their_deletion(
        apiserver: Apiserver, admin: Client, kubelet: subprocess.Popen[bytes]) -> None:
    names = replicaset(admin, "web", 2)
    wait_for(running(admin, names), 20, "pods Running")
    pod = admin.get(ns_path("pods", "default", "web-0"))
    conds = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conds["Ready"] == "True" and conds["ContainersReady"] == "True"
    assert pod["status"]["containerStatuses"][0]["ready"] is True
    assert "1/1     Running" in apiserver.kubectl("get", "pod", "web-0").stdout
    # a plain delete is graceful (the pod is bound and running): the kubelet ends it
    res = apiserver.kubectl("delete", "pod", "web-0", "--timeout=20s")
    assert 'pod "web-0" deleted' in res.stdout
    assert admin.find(ns_path("pods", "default", "web-0")) is None


def test_drain_evicts_the_pods_of_a_replicaset(
        apiserver: Apiserver, admin: Client, kubelet: subprocess.Popen[bytes]) -> None:
    names = replicaset(admin, "web", 3)
    wait_for(running(admin, names), 20, "pods Running")
    start = time.monotonic()
    res = apiserver.kubectl(*DRAIN, "--timeout=60s", check=False)
    assert res.returncode == 0, res.stderr
    for name in names:
        assert f"pod/{name} evicted" in res.stdout
    assert f"node/{NODE} drained" in res.stdout
    assert pods_left(admin) == []
    assert time.monotonic() - start < 30
    assert "SchedulingDisabled" in apiserver.kubectl("get", "node", NODE).stdout


def test_a_pdb_blocks_the_drain_until_it_times_out(
        apiserver: Apiserver, admin: Client, kubelet: subprocess.Popen[bytes],
        kcm: Component) -> None:
    names = replicaset(admin, "web", 2)
    wait_for(running(admin, names), 20, "pods Running")
    pdb(admin, "web", "web", minAvailable=2)
    status = wait_pdb(admin, "web", currentHealthy=2, desiredHealthy=2, expectedPods=2,
                      disruptionsAllowed=0)
    assert [c["reason"] for c in status["conditions"]] == ["InsufficientPods"]
    res = apiserver.kubectl(*DRAIN, "--timeout=8s", check=False)
    assert res.returncode == 1
    assert ("error when evicting pods/\"web-0\" -n \"default\" (will retry after 5s): Cannot "
            "evict pod as it would violate the pod's disruption budget.") in res.stderr
    assert "global timeout reached: 8s" in res.stderr
    assert f"node/{NODE} drained" not in res.stdout
    assert pods_left(admin) == names
    # kubectl shows the budget with the real printer columns
    out = apiserver.kubectl("get", "pdb", "web").stdout.split()
    assert out[:4] == ["NAME", "MIN", "AVAILABLE", "MAX"] and out[-4:-1] == ["2", "N/A", "0"]


def test_a_drain_blocked_by_a_pdb_goes_through_once_the_pdb_allows(
        apiserver: Apiserver, admin: Client, kubelet: subprocess.Popen[bytes],
        kcm: Component) -> None:
    names = replicaset(admin, "web", 2)
    wait_for(running(admin, names), 20, "pods Running")
    pdb(admin, "web", "web", minAvailable=2)
    wait_pdb(admin, "web", disruptionsAllowed=0, currentHealthy=2)
    argv = ["/usr/bin/kubectl", "--kubeconfig", str(apiserver.admin_conf), *DRAIN,
            "--timeout=90s"]
    drain = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, HOME=str(apiserver.pki.dir)))
    try:
        time.sleep(7)  # at least one refused eviction (kubectl retries every 5 s)
        assert drain.poll() is None and pods_left(admin) == names
        apiserver.kubectl("patch", "pdb", "web", "--type=merge", "-p",
                          '{"spec":{"minAvailable":0}}')
        out, err = drain.communicate(timeout=60)
    finally:
        if drain.poll() is None:
            drain.kill()
            drain.wait()
    assert drain.returncode == 0, err
    assert "Cannot evict pod as it would violate the pod's disruption budget." in err
    assert f"node/{NODE} drained" in out and pods_left(admin) == []
    status = wait_pdb(admin, "web", expectedPods=0, currentHealthy=0, disruptionsAllowed=0)
    assert "disruptedPods" not in status  # the controller dropped the deleted pods' entries


def test_a_pdb_with_max_unavailable_lets_one_pod_go_at_a_time(
        apiserver: Apiserver, admin: Client, kubelet: subprocess.Popen[bytes],
        kcm: Component) -> None:
    names = replicaset(admin, "web", 3)
    wait_for(running(admin, names), 20, "pods Running")
    pdb(admin, "web", "web", maxUnavailable=1)
    wait_pdb(admin, "web", expectedPods=3, desiredHealthy=2, currentHealthy=3,
             disruptionsAllowed=1)
    # nothing re-creates the evicted pod (no ReplicaSet controller), so only one can go
    res = apiserver.kubectl(*DRAIN, "--timeout=12s", check=False)
    assert res.returncode == 1
    assert sum(f"pod/{n} evicted" in res.stdout for n in names) == 1
    assert len(pods_left(admin)) == 2
    wait_pdb(admin, "web", expectedPods=3, desiredHealthy=2, currentHealthy=2,
             disruptionsAllowed=0)


def test_daemonset_pods_stay_with_ignore_daemonsets(
        apiserver: Apiserver, admin: Client, kubelet: subprocess.Popen[bytes]) -> None:
    ds = admin.create("/apis/apps/v1/namespaces/default/daemonsets", {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "template": {"metadata": {"labels": {"app": "agent"}},
                              "spec": {"containers": [{"name": "a", "image": "pause"}]}}}})
    admin.create(ns_path("pods", "default"), {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "agent-x1", "labels": {"app": "agent"},
                     "ownerReferences": [_owner("DaemonSet", ds)]},
        "spec": {"nodeName": NODE, "containers": [{"name": "a", "image": "pause"}]}})
    names = replicaset(admin, "web", 1)
    wait_for(running(admin, [*names, "agent-x1"]), 20, "pods Running")
    refused = apiserver.kubectl("drain", NODE, "--timeout=20s", check=False)
    assert refused.returncode == 1
    assert ("cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): "
            "default/agent-x1") in refused.stderr
    res = apiserver.kubectl(*DRAIN, "--timeout=30s", check=False)
    assert res.returncode == 0, res.stderr
    assert "Warning: ignoring DaemonSet-managed Pods: default/agent-x1" in res.stderr + res.stdout
    assert "pod/web-0 evicted" in res.stdout
    assert pods_left(admin) == ["agent-x1"]


def test_a_pod_under_two_pdbs_cannot_be_evicted(
        apiserver: Apiserver, admin: Client, kubelet: subprocess.Popen[bytes],
        kcm: Component) -> None:
    names = replicaset(admin, "web", 2)
    wait_for(running(admin, names), 20, "pods Running")
    pdb(admin, "a", "web", minAvailable=0)
    pdb(admin, "b", "web", maxUnavailable="100%")
    wait_pdb(admin, "a", disruptionsAllowed=2)
    wait_pdb(admin, "b", disruptionsAllowed=2)
    with pytest.raises(ApiError) as err:
        admin.create(ns_path("pods", "default", "web-0") + "/eviction",
                     {"apiVersion": "policy/v1", "kind": "Eviction",
                      "metadata": {"name": "web-0", "namespace": "default"}})
    assert err.value.code == 500
    assert err.value.message == ("This pod has more than one PodDisruptionBudget, which the "
                                 "eviction subresource does not support.")
    res = apiserver.kubectl(*DRAIN, "--timeout=10s", check=False)
    assert res.returncode == 1
    assert "This pod has more than one PodDisruptionBudget" in res.stderr
    assert pods_left(admin) == names
