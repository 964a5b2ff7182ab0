"""The stand-in kube-apiserver (under /usr/bin/python3) driven by the machine's real kubectl,
with a client certificate in group system:masters, objects stored in a real TLS etcd."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator

import pytest
import yaml

from hactl.lab.standins.kubeapi import Client, ns_path

from .conftest import Apiserver, wait_for

NOW = "2030-01-01T00:00:00Z"  # a heartbeat in the future: the Ready column comes from status


def _node(name: str, ready: bool, control_plane: bool) -> dict[str, object]:
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    if control_plane:
        labels["node-role.kubernetes.io/control-plane"] = ""
    return {
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
        "status": {
            "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                            "reason": "KubeletReady", "lastHeartbeatTime": NOW,
                            "lastTransitionTime": NOW}],
            "nodeInfo": {"kubeletVersion": "v1.30.4", "osImage": "Debian GNU/Linux 12",
                         "kernelVersion": "6.1.0", "containerRuntimeVersion": "hactl-lab://1"},
            "addresses": [{"type": "InternalIP", "address": "198.18.0.21"}],
        },
    }


def _pod(ns: str, name: str, node: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Running", "podIP": "198.18.0.21",
                       "containerStatuses": [{"name": "c", "ready": True, "restartCount": 0}]}}


@pytest.fixture
def admin(apiserver: Apiserver) -> Iterator[Client]:
    client = Client.from_kubeconfig(str(apiserver.admin_conf))
    try:
        yield client
    finally:
        client.close()


def test_health_and_version(apiserver: Apiserver) -> None:
    assert apiserver.get("/readyz") == (200, "ok")
    assert apiserver.get("/livez") == (200, "ok")
    assert apiserver.get("/healthz") == (200, "ok")
    code, text = apiserver.get("/readyz?verbose")
    assert code == 200 and "[+]etcd ok" in text and text.endswith("readyz check passed")
    assert apiserver.get("/readyz/etcd") == (200, "ok")
    code, text = apiserver.get("/version")
    assert code == 200
    version = json.loads(text)
    assert (version["gitVersion"], version["major"], version["minor"]) == ("v1.30.4", "1", "30")
    assert apiserver.kubectl("get", "--raw", "/readyz").stdout == "ok"
    assert "Server Version: v1.30.4" in apiserver.kubectl("version").stdout


def test_system_namespaces(apiserver: Apiserver) -> None:
    out = apiserver.kubectl("get", "ns", "--no-headers").stdout.split()
    for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
        assert ns in out


def test_get_nodes_status_roles_and_selector(apiserver: Apiserver, admin: Client) -> None:
    admin.create("/api/v1/nodes", _node("master01", True, True))
    admin.create("/api/v1/nodes", _node("master02", False, True))
    admin.create("/api/v1/nodes", _node("worker01", True, False))
    rows = [line.split() for line in apiserver.kubectl("get", "nodes").stdout.splitlines()]
    assert rows[0] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    by_name = {r[0]: r for r in rows[1:]}
    assert by_name["master01"][1:3] == ["Ready", "control-plane"]
    assert by_name["master02"][1:3] == ["NotReady", "control-plane"]
    assert by_name["worker01"][1:3] == ["Ready", "<none>"]
    assert by_name["worker01"][4] == "v1.30.4"
    cp = apiserver.kubectl("get", "nodes", "-l", "node-role.kubernetes.io/control-plane",
                           "-o", "name").stdout.split()
    assert cp == ["node/master01", "node/master02"]
    others = apiserver.kubectl("get", "nodes", "-l", "!node-role.kubernetes.io/control-plane",
                               "-o", "name").stdout.split()
    assert others == ["node/worker01"]
    wide = apiserver.kubectl("get", "nodes", "-o", "wide").stdout
    assert "INTERNAL-IP" in wide and "198.18.0.21" in wide
    one = apiserver.kubectl("get", "node", "master02").stdout
    assert "NotReady" in one


def test_pods_all_namespaces_leases_and_configmap_yaml(apiserver: Apiserver,
                                                        admin: Client) -> None:
    admin.create(ns_path("pods", "kube-system"), _pod("kube-system", "etcd-master01", "master01"))
    admin.create(ns_path("pods", "default"), _pod("default", "web", "worker01"))
    out = apiserver.kubectl("get", "pods", "-A").stdout.splitlines()
    assert out[0].split() == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert any(line.split()[:4] == ["kube-system", "etcd-master01", "1/1", "Running"]
               for line in out)
    assert any(line.split()[:2] == ["default", "web"] for line in out)
    leases = apiserver.kubectl("get", "lease", "-n", "kube-system").stdout
    assert leases.split()[:3] == ["NAME", "HOLDER", "AGE"] and "apiserver-" in leases
    cfg = {"apiVersion": "kubeadm.k8s.io/v1beta3", "kind": "ClusterConfiguration",
           "controlPlaneEndpoint": "k8s-api.lab:6443"}
    admin.create(ns_path("configmaps", "kube-system"), {
        "metadata": {"name": "kubeadm-config"},
        "data": {"ClusterConfiguration": yaml.safe_dump(cfg)}})
    doc = yaml.safe_load(apiserver.kubectl("get", "cm", "-n", "kube-system", "kubeadm-config",
                                           "-o", "yaml").stdout)
    assert doc["kind"] == "ConfigMap" and doc["metadata"]["resourceVersion"]
    assert yaml.safe_load(doc["data"]["ClusterConfiguration"]) == cfg


def test_kubectl_writes(apiserver: Apiserver, tmp_path: object) -> None:
    k = apiserver.kubectl
    k("create", "configmap", "demo", "-n", "default", "--from-literal=a=1")
    k("label", "configmap", "demo", "-n", "default", "tier=x")
    k("patch", "configmap", "demo", "-n", "default", "--type=merge", "-p", '{"data":{"b":"2"}}')
    doc = json.loads(k("get", "configmap", "demo", "-n", "default", "-o", "json").stdout)
    assert doc["data"] == {"a": "1", "b": "2"} and doc["metadata"]["labels"] == {"tier": "x"}
    manifest = json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "applied", "namespace": "default"},
                           "data": {"k": "v"}})
    res = subprocess.run([*_kubectl_base(apiserver), "apply", "-f", "-"], input=manifest,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    k("delete", "configmap", "demo", "-n", "default")
    missing = k("get", "configmap", "demo", "-n", "default", check=False)
    assert missing.returncode == 1
    assert 'configmaps "demo" not found' in missing.stderr


def _kubectl_base(apiserver: Apiserver) -> list[str]:
    return ["/usr/bin/kubectl", "--kubeconfig", str(apiserver.admin_conf),
            "--request-timeout=20s"]


def test_objects_live_in_etcd(apiserver: Apiserver, admin: Client) -> None:
    admin.create("/api/v1/nodes", _node("master01", True, True))
    p = apiserver.pki
    endpoints = apiserver.argv[apiserver.argv.index("--etcd-servers") + 1]
    res = subprocess.run(
        ["etcdctl", f"--endpoints={endpoints}", f"--cacert={p.etcd_ca.pair.cert}",
         f"--cert={p.etcd_client.cert}", f"--key={p.etcd_client.key}",
         "get", "--prefix", "--keys-only", "/registry/"],
        capture_output=True, text=True, timeout=30, env={"ETCDCTL_API": "3"})
    assert res.returncode == 0, res.stderr
    keys = set(res.stdout.split())
    assert "/registry/minions/master01" in keys
    assert "/registry/namespaces/kube-system" in keys
    assert any(k.startswith("/registry/leases/kube-system/apiserver-") for k in keys)


def test_watch_with_kubectl_wait_and_get_w(apiserver: Apiserver, admin: Client) -> None:
    env = {"HOME": str(apiserver.pki.dir)}
    admin.create("/api/v1/nodes", _node("master01", False, True))
    admin.create(ns_path("configmaps", "default"), {"metadata": {"name": "w0"}})
    waiter = subprocess.Popen([*_kubectl_base(apiserver), "wait", "--for=condition=Ready",
                               "node/master01", "--timeout=30s"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    watcher = subprocess.Popen([*_kubectl_base(apiserver), "get", "configmaps", "-n", "default",
                                "-w", "--output-watch-events", "--no-headers"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env=env)
    lines: list[list[str]] = []

    def read() -> None:
        assert watcher.stdout is not None
        for line in watcher.stdout:
            lines.append(line.split()[:3])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: len(lines) >= 1, 30, "kubectl get -w to list")  # ADDED w0
        admin.patch("/api/v1/nodes/master01/status", {"status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady",
             "lastHeartbeatTime": NOW, "lastTransitionTime": NOW}]}})
        out, err = waiter.communicate(timeout=40)
        assert waiter.returncode == 0, err
        assert "node/master01 condition met" in out
        admin.create(ns_path("configmaps", "default"), {"metadata": {"name": "w1"}})
        admin.patch(ns_path("configmaps", "default", "w1"), {"data": {"a": "b"}})
        admin.delete(ns_path("configmaps", "default", "w1"))
        wait_for(lambda: len(lines) >= 4, 30, "the watch events")
    finally:
        for proc in (waiter, watcher):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
            proc.wait(10)
    reader.join(10)
    for stream in (waiter.stdout, waiter.stderr, watcher.stdout):
        if stream is not None:
            stream.close()
    assert lines == [["ADDED", "w0", "0"], ["ADDED", "w1", "0"], ["MODIFIED", "w1", "1"],
                     ["DELETED", "w1", "1"]]


def test_auth_can_i(apiserver: Apiserver) -> None:
    assert apiserver.kubectl("auth", "can-i", "list", "nodes").stdout.strip() == "yes"
    jane = apiserver.pki.kubeconfig("jane", apiserver.url, apiserver.pki.jane)
    res = apiserver.kubectl("auth", "can-i", "get", "secrets", "-n", "kube-system", conf=jane,
                            check=False)
    assert (res.returncode, res.stdout.strip()) == (1, "no")
    nodes = apiserver.pki.kubeconfig("node", apiserver.url, apiserver.pki.node)
    assert apiserver.kubectl("auth", "can-i", "update", "leases", "-n", "kube-node-lease",
                             conf=nodes).stdout.strip() == "yes"


def test_cordon_drain_delete_node(apiserver: Apiserver, admin: Client) -> None:
    admin.create("/api/v1/nodes", _node("master03", True, True))
    mirror = _pod("kube-system", "etcd-master03", "master03")
    mirror["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "x"}  # type: ignore[index]
    admin.create(ns_path("pods", "kube-system"), mirror)
    bare = _pod("default", "bare", "master03")
    bare["status"]["phase"] = "Succeeded"  # type: ignore[index]  # terminal: deleted at once
    admin.create(ns_path("pods", "default"), bare)
    res = apiserver.kubectl("drain", "master03", "--force", "--ignore-daemonsets",
                            "--timeout=30s")
    assert "pod/bare evicted" in res.stdout and "node/master03 drained" in res.stdout
    assert "SchedulingDisabled" in apiserver.kubectl("get", "node", "master03").stdout
    pods = apiserver.kubectl("get", "pods", "-A", "-o", "name").stdout.split()
    assert pods == ["pod/etcd-master03"]  # mirror pods are not evicted
    apiserver.kubectl("delete", "node", "master03")
    assert apiserver.kubectl("get", "nodes", "-o", "name").stdout.strip() == ""
