"""kubeadm + kubelet stand-ins against a REAL TLS etcd and the stand-in kube-apiserver, on loopback.

The "node" is a directory (HACTL_LAB_ROOT relocates /etc/kubernetes, /var/lib/kubelet, /run ...);
``systemctl`` is replaced by ``true`` (HACTL_LAB_SYSTEMCTL) and the test starts the kubelet itself
when kubeadm has written its configuration, as the lab's systemctl would on ``restart kubelet``.
Every process is started here and stopped by PID, also on failure.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .conftest import KUBECTL, PKI, PY, REPO, Etcd, free_port, stop_pid, wait_for

SHIMS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubeadm", "kubelet")


class Node:
    def __init__(self, tmp: Path, pki: PKI, etcd: Etcd, name: str = "master01") -> None:
        self.root = tmp / name
        self.name = name
        self.port = free_port()
        self.bin = tmp / "bin"
        self.bin.mkdir(exist_ok=True)
        for shim in SHIMS:
            path = self.bin / shim
            path.write_text(f'#!/bin/sh\nPYTHONPATH={REPO} exec {PY} -m hactl.lab.standins.'
                            f'{shim.replace("-", "_")} "$@"\n')
            path.chmod(0o755)
        pki_dir = self.root / "etc/kubernetes/pki"
        (pki_dir / "etcd").mkdir(parents=True)
        shutil.copy(pki.etcd_ca.pair.cert, pki_dir / "etcd/ca.crt")
        shutil.copy(pki.etcd_client.cert, pki_dir / "apiserver-etcd-client.crt")
        shutil.copy(pki.etcd_client.key, pki_dir / "apiserver-etcd-client.key")
        knobs = self.root / "etc/hactl-lab/standins.yaml"
        knobs.parent.mkdir(parents=True)
        knobs.write_text(yaml.safe_dump({
            "kubeadm": {"apiWaitSeconds": 60, "kubeletWaitSeconds": 60, "certsTTLSeconds": 600,
                        "discoveryTimeoutSeconds": 10, "etcdEndpointsTimeoutSeconds": 2},
            "kubelet": {"heartbeatSeconds": 1, "syncSeconds": 0.5},
        }))
        self.healthz = free_port()
        self.config = tmp / f"{name}-kubeadm.yaml"
        self.config.write_text(yaml.safe_dump_all([
            {"apiVersion": "kubeadm.k8s.io/v1beta3", "kind": "InitConfiguration",
             "localAPIEndpoint": {"advertiseAddress": "127.0.0.1", "bindPort": self.port},
             "nodeRegistration": {"name": name}},
            {"apiVersion": "kubeadm.k8s.io/v1beta3", "kind": "ClusterConfiguration",
             "kubernetesVersion": "v1.30.4",
             "controlPlaneEndpoint": f"127.0.0.1:{self.port}",
             "networking": {"podSubnet": "10.244.0.0/16"},
             "apiServer": {"extraArgs": {"bind-address": "127.0.0.1"}},
             "controllerManager": {"extraArgs": {"secure-port": str(free_port())}},
             "scheduler": {"extraArgs": {"secure-port": str(free_port())}},
             "etcd": {"external": {"endpoints": etcd.endpoints.split(","),
                                   "caFile": "/etc/kubernetes/pki/etcd/ca.crt",
                                   "certFile": "/etc/kubernetes/pki/apiserver-etcd-client.crt",
                                   "keyFile": "/etc/kubernetes/pki/apiserver-etcd-client.key"}}},
            {"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
             "healthzPort": self.healthz},
        ]))
        self.env = dict(os.environ, HACTL_LAB_ROOT=str(self.root), HACTL_LAB_SYSTEMCTL="true",
                        PATH=f"{self.bin}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", PYTHONPATH=str(REPO),
                        HOME=str(tmp))
        # a pod network: a CNI configuration in /etc/cni/net.d (without one the kubelet reports
        # the Node NotReady, as with containerd: "cni plugin not initialized")
        cni = self.root / "etc/cni/net.d"
        cni.mkdir(parents=True, exist_ok=True)
        (cni / "10-flannel.conflist").write_text(
            '{"name": "cbr0", "cniVersion": "0.3.1", "plugins": [{"type": "flannel"}]}')
        self.kubelet: subprocess.Popen[bytes] | None = None
        # a prepared host, as kubeadm's preflight wants it: ip_forward on, no swap, a CRI socket
        forward = self.root / "proc/sys/net/ipv4/ip_forward"
        forward.parent.mkdir(parents=True)
        forward.write_text("1\n")
        (self.root / "proc/swaps").write_text("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n")
        cri = self.root / "var/run/containerd/containerd.sock"
        cri.parent.mkdir(parents=True)
        self.cri = socket.socket(socket.AF_UNIX)
        self.cri.bind(str(cri))
        self.cri.listen()

    def close(self) -> None:
        self.cri.close()

    def short_certs_ttl(self, seconds: int = 2) -> None:
        """The lab knob: the next upload-certs makes a kubeadm-certs Secret living ``seconds``."""
        knobs = self.root / "etc/hactl-lab/standins.yaml"
        doc = yaml.safe_load(knobs.read_text())
        doc["kubeadm"]["certsTTLSeconds"] = seconds
        knobs.write_text(yaml.safe_dump(doc))

    def kubeadm(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PY, "-m", "hactl.lab.standins.kubeadm", *args], capture_output=True,
                              text=True, env=self.env, timeout=timeout, cwd="/")

    def kubeadm_with_kubelet(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run kubeadm; start the kubelet once kubeadm wrote its config (systemctl's job)."""
        proc = subprocess.Popen([PY, "-m", "hactl.lab.standins.kubeadm", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.env, cwd="/")
        try:
            config = self.root / "var/lib/kubelet/config.yaml"
            deadline = time.monotonic() + 300  # as long as kubeadm runs (slow under load)
            while proc.poll() is None and time.monotonic() < deadline and not config.exists():
                time.sleep(0.1)
            if config.exists() and self.kubelet is None:
                self.start_kubelet()
            stdout, stderr = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)

    def start_kubelet(self) -> None:
        log = open(self.root / "kubelet.log", "ab")  # noqa: SIM115
        self.kubelet = subprocess.Popen(
            [PY, "-m", "hactl.lab.standins.kubelet", "--config=/var/lib/kubelet/config.yaml",
             "--kubeconfig=/etc/kubernetes/kubelet.conf",
             "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf"],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd="/")
        log.close()

    def stop_kubelet(self) -> None:
        if self.kubelet is not None:
            stop_pid(self.kubelet)  # type: ignore[arg-type]
            self.kubelet = None

    def pod_pids(self) -> dict[str, int]:
        state = self.root / "run/hactl-kubelet/pods"
        if not state.exists():
            return {}
        return {p.stem: json.loads(p.read_text())["pid"] for p in state.glob("*.json")}

    def kill_pods(self) -> None:
        for pid in self.pod_pids().values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([KUBECTL, "--kubeconfig", str(self.root / "etc/kubernetes/admin.conf"),
                               "--request-timeout=10s", *args], capture_output=True, text=True,
                              timeout=30, env=self.env)


@pytest.fixture
def node(tmp_path: Path, pki: PKI, etcd1: Etcd) -> Iterator[Node]:
    n = Node(tmp_path, pki, etcd1)
    try:
        yield n
    finally:
        n.stop_kubelet()
        n.kill_pods()
        n.close()


def secret_data(node: Node, name: str) -> dict[str, bytes]:
    res = node.kubectl("-n", "kube-system", "get", "secret", name, "-o", "json")
    assert res.returncode == 0, res.stderr
    return {k: base64.b64decode(v) for k, v in json.loads(res.stdout)["data"].items()}


def test_init_external_etcd_then_upload_certs_and_tokens(node: Node) -> None:
    res = node.kubeadm_with_kubelet("init", "--config", str(node.config), "--upload-certs")
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "Your Kubernetes control-plane has initialized successfully!" in out
    assert "--control-plane --certificate-key" in out
    key = out.split("[upload-certs] Using certificate key:\n", 1)[1].split("\n", 1)[0]
    assert len(key) == 64 and int(key, 16) >= 0

    # the real kubectl sees the node, Ready and labelled control-plane
    def ready() -> bool:
        r = node.kubectl("get", "nodes", "-l", "node-role.kubernetes.io/control-plane", "-o", "json")
        if r.returncode != 0:
            return False
        items = json.loads(r.stdout)["items"]
        return any(c["type"] == "Ready" and c["status"] == "True"
                   for i in items for c in i["status"]["conditions"])
    wait_for(ready, 90, "master01 Ready")

    # kubeadm-certs: sealed under the key, with an ownerReference to a 2 h token
    from hactl.lab.standins.kubeadm_certs import unseal

    data = secret_data(node, "kubeadm-certs")
    assert set(data) >= {"ca.crt", "ca.key", "sa.key", "sa.pub", "front-proxy-ca.crt",
                         "external-etcd-ca.crt", "external-etcd.crt", "external-etcd.key"}
    ca = (node.root / "etc/kubernetes/pki/ca.crt").read_bytes()
    assert unseal(data["ca.crt"], key) == ca
    # tokens: the default one and the kubeadm-certs proxy
    listing = node.kubeadm("token", "list")
    assert listing.returncode == 0, listing.stderr
    assert "Proxy for managing TTL for the kubeadm-certs secret" in listing.stdout
    assert "The default bootstrap token generated by 'kubeadm init'." in listing.stdout
    # a fresh key re-uploads and replaces the Secret
    again = node.kubeadm("init", "phase", "upload-certs", "--upload-certs", "--config", str(node.config))
    assert again.returncode == 0, again.stderr
    key2 = again.stdout.strip().splitlines()[-1]
    assert key2 != key
    data2 = secret_data(node, "kubeadm-certs")
    assert unseal(data2["ca.crt"], key2) == ca
    # token create --print-join-command
    join = node.kubeadm("token", "create", "--print-join-command", "--certificate-key", key2)
    assert join.returncode == 0, join.stderr
    assert join.stdout.startswith(f"kubeadm join 127.0.0.1:{node.port} --token ")
    assert "--discovery-token-ca-cert-hash sha256:" in join.stdout
    # check-expiration: the real table
    exp = node.kubeadm("certs", "check-expiration")
    assert exp.returncode == 0, exp.stderr
    assert "CERTIFICATE                EXPIRES" in exp.stdout
    assert "apiserver-etcd-client" not in exp.stdout  # external etcd

    # a second init is refused by preflight, like the real one
    second = node.kubeadm("init", "--config", str(node.config))
    assert second.returncode == 1
    assert f"[ERROR Port-{node.port}]: Port {node.port} is in use" in second.stderr
    assert "[ERROR FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml]" in second.stderr
    assert "[preflight] Some fatal errors occurred:" in second.stderr

    # after the proxy token's TTL the controller-manager deletes the token and kubeadm-certs with it
    node.short_certs_ttl(2)
    assert node.kubeadm("init", "phase", "upload-certs", "--upload-certs", "--config", str(node.config)).returncode == 0

    def certs_gone() -> bool:
        r = node.kubectl("-n", "kube-system", "get", "secret", "kubeadm-certs")
        return r.returncode != 0 and "NotFound" in r.stderr
    wait_for(certs_gone, 120, "kubeadm-certs deleted after its TTL")


def test_kubelet_stop_leaves_pods_running_and_restart_adopts(node: Node) -> None:
    res = node.kubeadm_with_kubelet("init", "--config", str(node.config))
    assert res.returncode == 0, res.stdout + res.stderr
    pids = node.pod_pids()
    assert set(pids) == {"kube-system_kube-apiserver", "kube-system_kube-controller-manager",
                         "kube-system_kube-scheduler"}
    node.stop_kubelet()
    time.sleep(1)
    for pid in pids.values():
        os.kill(pid, 0)  # still running
    node.start_kubelet()
    time.sleep(2)
    assert node.pod_pids() == pids  # adopted, not restarted
    # a killed pod is restarted
    os.killpg(pids["kube-system_kube-scheduler"], signal.SIGKILL)
    wait_for(lambda: node.pod_pids().get("kube-system_kube-scheduler", 0) not in (0, pids["kube-system_kube-scheduler"]),
             15, "scheduler restarted")
    # mirror pods are visible to the real kubectl
    wait_for(lambda: "kube-apiserver-master01" in node.kubectl("get", "pods", "-A").stdout, 30, "mirror pods")
    # a changed manifest: the pod is restarted from it and, as with the real kubelet, its mirror
    # Pod is replaced by one of the new manifest (annotated with its hash)
    manifest = node.root / "etc/kubernetes/manifests/kube-scheduler.yaml"
    pod = yaml.safe_load(manifest.read_text())
    pod["metadata"].setdefault("labels", {})["hactl.test/changed"] = "yes"
    manifest.write_text(yaml.safe_dump(pod))

    def mirror_changed() -> bool:
        res = node.kubectl("get", "pod", "-n", "kube-system", "kube-scheduler-master01", "-o", "json")
        if res.returncode != 0:
            return False
        meta = json.loads(res.stdout)["metadata"]
        return (meta.get("labels") or {}).get("hactl.test/changed") == "yes" and \
            meta["annotations"]["kubernetes.io/config.hash"] == meta["annotations"]["kubernetes.io/config.mirror"]

    wait_for(mirror_changed, 30, "the mirror Pod of the changed manifest")
    # a removed manifest: the pod is stopped and its mirror Pod deleted
    (node.root / "etc/kubernetes/manifests/kube-scheduler.yaml").unlink()
    wait_for(lambda: "kube-system_kube-scheduler" not in node.pod_pids()
             and "kube-scheduler-master01" not in node.kubectl("get", "pods", "-A").stdout, 30, "scheduler gone")
    # reset: stops the pods and clears the node. External etcd: like kubeadm v1.30 (whose
    # remove-etcd-member phase falls back to the default data dir when the cluster's config has
    # no local etcd), it looks for etcd Pods, finds none, warns, and empties /var/lib/etcd
    node.stop_kubelet()
    reset = node.kubeadm("reset", "-f")
    assert reset.returncode == 0, reset.stderr
    assert "[reset] No kubeadm config, using etcd pod spec to get data directory" in reset.stderr
    assert ("[reset] Failed to remove etcd member: could not retrieve the list of etcd endpoints: "
            "context deadline exceeded, please manually remove this etcd member using etcdctl"
            ) in reset.stderr
    assert "[reset] Deleted contents of the etcd data directory: /var/lib/etcd" in reset.stdout
    assert not any((node.root / "etc/kubernetes/manifests").iterdir())
    assert not (node.root / "etc/kubernetes/admin.conf").exists()
    assert node.pod_pids() == {}


def join_config(tmp: Path, joiner: Node, first: Node, token: str, ca_hash: str, key: str) -> Path:
    path = tmp / f"{joiner.name}-join.yaml"
    path.write_text(yaml.safe_dump_all([
        {"apiVersion": "kubeadm.k8s.io/v1beta3", "kind": "JoinConfiguration",
         "discovery": {"bootstrapToken": {"apiServerEndpoint": f"127.0.0.1:{first.port}", "token": token,
                                          "caCertHashes": [ca_hash]}},
         "nodeRegistration": {"name": joiner.name},
         "controlPlane": {"localAPIEndpoint": {"advertiseAddress": "127.0.0.1", "bindPort": joiner.port},
                          "certificateKey": key}},
        {"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
         "healthzPort": joiner.healthz},
    ]))
    return path


@pytest.fixture
def trio(tmp_path: Path, pki: PKI, etcd1: Etcd) -> Iterator[tuple[Node, Node, Node]]:
    nodes = tuple(Node(tmp_path, pki, etcd1, f"master0{i}") for i in (1, 2, 3))
    try:
        yield nodes  # type: ignore[misc]
    finally:
        for n in reversed(nodes):
            n.stop_kubelet()
            n.kill_pods()
            n.close()


def test_control_plane_join_pins_the_ca_and_needs_the_right_key(tmp_path: Path,
                                                               trio: tuple[Node, Node, Node]) -> None:
    first, second, third = trio
    # master02 holds no PKI of its own: everything comes from kubeadm-certs
    shutil.rmtree(second.root / "etc/kubernetes/pki")
    init = first.kubeadm_with_kubelet("init", "--config", str(first.config), "--upload-certs")
    assert init.returncode == 0, init.stdout + init.stderr
    key = init.stdout.split("[upload-certs] Using certificate key:\n", 1)[1].split("\n", 1)[0]
    token = init.stdout.split("--token ", 1)[1].split()[0]
    ca_hash = init.stdout.split("--discovery-token-ca-cert-hash ", 1)[1].split()[0]

    # an unknown (or expired) token: the bootstrap signer never signs cluster-info for it
    unknown = second.kubeadm("join", "--config", str(join_config(tmp_path, second, first, "abcdef.0123456789abcdef",
                                                                 ca_hash, key)))
    assert unknown.returncode == 1
    assert ("couldn't validate the identity of the API Server: could not find a JWS signature in the "
            'cluster-info ConfigMap for token ID "abcdef"') in unknown.stderr
    # a CA pin that does not match: refused before anything is written
    bad_pin = second.kubeadm("join", "--config",
                             str(join_config(tmp_path, second, first, token, "sha256:" + "0" * 64, key)))
    assert bad_pin.returncode == 1
    assert ("couldn't validate the identity of the API Server: cluster CA found in cluster-info ConfigMap "
            f'is invalid: none of the public keys "{ca_hash}" are pinned') in bad_pin.stderr
    # a wrong certificate key: AES-GCM authentication fails, like the real kubeadm
    wrong = second.kubeadm("join", "--config",
                           str(join_config(tmp_path, second, first, token, ca_hash, "ab" * 32)))
    assert wrong.returncode == 1
    assert ("error execution phase control-plane-prepare/download-certs: error downloading certs: "
            "error decoding secret data with provided key: cipher: message authentication failed") in wrong.stderr
    assert not (second.root / "etc/kubernetes/pki/ca.key").exists()

    # the right key: master02 joins, its own API server serves, both nodes are control-plane
    ok = second.kubeadm_with_kubelet("join", "--config",
                                     str(join_config(tmp_path, second, first, token, ca_hash, key)))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "This node has joined the cluster and a new control plane instance was created" in ok.stdout
    assert (second.root / "etc/kubernetes/pki/ca.key").read_bytes() == \
        (first.root / "etc/kubernetes/pki/ca.key").read_bytes()

    def both_ready() -> bool:
        r = first.kubectl("get", "nodes", "-l", "node-role.kubernetes.io/control-plane", "-o", "json")
        items = json.loads(r.stdout)["items"] if r.returncode == 0 else []
        ready = {i["metadata"]["name"] for i in items for c in i["status"]["conditions"]
                 if c["type"] == "Ready" and c["status"] == "True"}
        return ready == {"master01", "master02"}
    wait_for(both_ready, 90, "two Ready control-plane nodes")

    # once kubeadm-certs has expired (2 s here, 2 h for real), a join fails like the real one
    first.short_certs_ttl(2)
    # like the real kubeadm, the phase refuses --certificate-key next to --config ...
    mixed = first.kubeadm("init", "phase", "upload-certs", "--upload-certs", "--certificate-key", key,
                          "--config", str(first.config))
    assert (mixed.returncode, mixed.stdout) == (1, "")
    assert mixed.stderr == ("can not mix '--config' with arguments [certificate-key]\n"
                            "To see the stack trace of this error execute with --v=5 or higher\n")
    # ... and takes the key from InitConfiguration.certificateKey instead
    keyed = tmp_path / "master01-keyed.yaml"
    docs = list(yaml.safe_load_all(first.config.read_text()))
    docs[0]["certificateKey"] = key
    keyed.write_text(yaml.safe_dump_all(docs))
    again = first.kubeadm("init", "phase", "upload-certs", "--upload-certs", "--config", str(keyed))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == key

    def certs_gone() -> bool:
        return "NotFound" in first.kubectl("-n", "kube-system", "get", "secret", "kubeadm-certs").stderr
    wait_for(certs_gone, 120, "kubeadm-certs expired")
    late = third.kubeadm("join", "--config", str(join_config(tmp_path, third, first, token, ca_hash, key)))
    assert late.returncode == 1
    assert 'Secret "kubeadm-certs" was not found in the "kube-system" Namespace. This Secret might have expired.' \
        in late.stderr


def test_external_etcd_too_old_for_kubeadm_1_31(node: Node) -> None:
    text = node.config.read_text().replace("kubernetesVersion: v1.30.4", "kubernetesVersion: v1.31.0")
    node.config.write_text(text)
    res = node.kubeadm("init", "--config", str(node.config))
    assert res.returncode == 1
    assert ("[ERROR ExternalEtcdVersion]: this version of kubeadm only supports external etcd version "
            ">= 3.5.11. Current version: 3.4.23") in res.stderr
    assert res.stdout.startswith("[init] Using Kubernetes version: v1.31.0\n[preflight] Running pre-flight checks")
    assert not (node.root / "etc/kubernetes/admin.conf").exists()
