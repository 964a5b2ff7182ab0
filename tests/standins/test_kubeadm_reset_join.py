"""``kubeadm reset`` phases and ``kubeadm join``'s existing-Node refusal, against the stand-in
API server, a real etcd (etcdctl for member removal) and a node relocated under HACTL_LAB_ROOT."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hactl.lab.standins import kubeadm_reset as reset
from hactl.lab.standins.kubeadm_api import Api
from hactl.lab.standins.kubeapi import Client, ns_path

from .conftest import PKI, Apiserver, Etcd, wait_for
from .test_kubeadm_integration import Node, node  # noqa: F401 - the fixture

ANN = "kubeadm.kubernetes.io/etcd.advertise-client-urls"


def run_reset(root: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HACTL_LAB_ROOT=str(root), HACTL_LAB_SYSTEMCTL="true",
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return subprocess.run(["/usr/bin/python3", "-m", "hactl.lab.standins.kubeadm", "reset", *args],
                          capture_output=True, text=True, env=env, input=stdin, timeout=120,
                          cwd="/")


def worker_root(tmp_path: Path) -> Path:
    root = tmp_path / "worker"
    for d in ("etc/kubernetes/pki", "etc/kubernetes/manifests", "var/lib/kubelet/pki",
              "var/lib/etcd/member"):
        (root / d).mkdir(parents=True)
    (root / "etc/kubernetes/kubelet.conf").write_text("x")
    (root / "etc/kubernetes/pki/ca.crt").write_text("x")
    (root / "var/lib/kubelet/config.yaml").write_text("x")
    (root / "var/lib/etcd/member/db").write_text("x")
    return root


def test_reset_of_a_worker_runs_every_phase(tmp_path: Path) -> None:
    root = worker_root(tmp_path)
    res = run_reset(root, "-f")
    assert res.returncode == 0, res.stderr
    # no admin.conf: no client, no configuration read from the cluster
    assert "Reading configuration" not in res.stdout
    assert "[reset] No kubeadm config, using etcd pod spec to get data directory" in res.stderr
    lines = res.stdout.splitlines()
    assert lines[:6] == [
        "[preflight] Running pre-flight checks",
        "[reset] Deleted contents of the etcd data directory: /var/lib/etcd",
        "[reset] Stopping the kubelet service",
        '[reset] Unmounting mounted directories in "/var/lib/kubelet"',
        "[reset] Deleting contents of directories: [/etc/kubernetes/manifests /var/lib/kubelet "
        "/etc/kubernetes/pki]",
        "[reset] Deleting files: [/etc/kubernetes/admin.conf /etc/kubernetes/super-admin.conf "
        "/etc/kubernetes/kubelet.conf /etc/kubernetes/bootstrap-kubelet.conf "
        "/etc/kubernetes/controller-manager.conf /etc/kubernetes/scheduler.conf]"]
    for d in ("etc/kubernetes/pki", "var/lib/kubelet", "var/lib/etcd"):
        assert list((root / d).iterdir()) == [], d
    assert not (root / "etc/kubernetes/kubelet.conf").exists()


def test_reset_skip_phases_and_confirmation(tmp_path: Path) -> None:
    root = worker_root(tmp_path)
    bad = run_reset(root, "-f", "--skip-phases=remove-etcd-members")
    assert bad.returncode == 1 and "invalid phase name: remove-etcd-members" in bad.stderr
    no = run_reset(root, stdin="n\n")
    assert no.returncode == 1
    assert ("error execution phase preflight: won't proceed; the user didn't answer (Y|y) in "
            "order to continue") in no.stderr
    assert (root / "etc/kubernetes/kubelet.conf").exists()  # nothing done
    res = run_reset(root, "-f", "--skip-phases=remove-etcd-member")
    assert res.returncode == 0, res.stderr
    assert "etcd data directory" not in res.stdout
    assert (root / "var/lib/etcd/member/db").exists()  # the phase that empties it was skipped
    assert not (root / "etc/kubernetes/kubelet.conf").exists()
    again = run_reset(root, "-f", "--skip-phases", "cleanup-node,preflight")
    assert again.returncode == 0, again.stderr
    assert "[preflight] Running pre-flight checks" not in again.stdout
    assert "Stopping the kubelet" not in again.stdout
    assert list((root / "var/lib/etcd").iterdir()) == []


@pytest.fixture
def admin3(apiserver3: Apiserver) -> Iterator[Client]:
    client = Client.from_kubeconfig(str(apiserver3.admin_conf))
    try:
        yield client
    finally:
        client.close()


def etcdctl(pki: PKI, etcd: Etcd, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["etcdctl", f"--endpoints={etcd.endpoints}", f"--cacert={pki.etcd_ca.pair.cert}",
                           f"--cert={pki.etcd_client.cert}", f"--key={pki.etcd_client.key}",
                           "-w", "json", *args], capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, ETCDCTL_API="3"))


def test_remove_stacked_member_through_the_etcd_pods(
        tmp_path: Path, apiserver3: Apiserver, admin3: Client, etcd3: Etcd, pki: PKI,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # kubeadm's etcd client identity on the "node": etcd/ca.crt + etcd/healthcheck-client
    root = tmp_path / "master03"
    etcd_pki = root / "etc/kubernetes/pki/etcd"
    etcd_pki.mkdir(parents=True)
    shutil.copy(pki.etcd_ca.pair.cert, etcd_pki / "ca.crt")
    shutil.copy(pki.etcd_client.cert, etcd_pki / "healthcheck-client.crt")
    shutil.copy(pki.etcd_client.key, etcd_pki / "healthcheck-client.key")
    (root / "var/lib/etcd/member").mkdir(parents=True)
    (root / "var/lib/etcd/member/db").write_text("x")
    api = Api.from_kubeconfig(str(apiserver3.admin_conf))  # read before the relocation
    monkeypatch.setenv("HACTL_LAB_ROOT", str(root))
    # the etcd mirror Pods kubeadm's client reads its endpoints from
    for i, member in enumerate(etcd3.members[:2]):
        admin3.create(ns_path("pods", "kube-system"), {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"etcd-master0{i + 1}", "annotations": {ANN: member.endpoint},
                         "labels": {"component": "etcd", "tier": "control-plane"}},
            "spec": {"containers": [{"name": "etcd", "image": "etcd"}]}})
    # the departing master's member: its peer URL is https://<advertise>:2380
    # (etcd refuses reconfiguration until its members have been up for a few seconds)
    wait_for(lambda: etcdctl(pki, etcd3, "member", "add", "master03",
                             "--peer-urls=https://127.0.0.9:2380").returncode == 0, 30,
             "member add")
    # a second add of the same peer URL is refused by etcd itself (with an unstarted member
    # in the cluster its strict reconfiguration check answers first)
    twice = etcdctl(pki, etcd3, "member", "add", "again", "--peer-urls=https://127.0.0.9:2380")
    assert twice.returncode != 0
    assert ("Peer URLs already exists" in twice.stderr or "unhealthy cluster" in twice.stderr)

    cfg = reset.ResetConfig(api, {"etcd": {"local": {"dataDir": "/var/lib/etcd"}}}, "master03",
                            "127.0.0.9")
    try:
        reset.phase_remove_etcd_member(cfg)
    finally:
        api.close()
    members = json.loads(etcdctl(pki, etcd3, "member", "list").stdout)["members"]
    assert [m["peerURLs"] for m in members if "https://127.0.0.9:2380" in m["peerURLs"]] == []
    assert len(members) == 3
    assert capsys.readouterr().out == (
        "[reset] Deleted contents of the etcd data directory: /var/lib/etcd\n")
    assert list((root / "var/lib/etcd").iterdir()) == []
    # already gone (hactl removed it through another master). kubeadm v1.30.6 and later
    # (kubernetes#127491): no error, the data dir is emptied
    versions = root / "etc/hactl-lab/versions"
    versions.parent.mkdir(parents=True)
    versions.write_text("kubernetes: v1.30.6\n")
    (root / "var/lib/etcd/member").mkdir()
    try:
        reset.phase_remove_etcd_member(cfg)
    finally:
        api.close()
    captured = capsys.readouterr()
    assert "Failed to remove etcd member" not in captured.err
    assert captured.out == "[reset] Deleted contents of the etcd data directory: /var/lib/etcd\n"
    assert list((root / "var/lib/etcd").iterdir()) == []
    # v1.30.4 (the lab's default): member ID 0 → etcd's "member not found", retried until the
    # etcd API call timeout (2 min; 2 s here), then the warning; the data dir is emptied anyway
    versions.write_text("kubernetes: v1.30.4\n")
    (root / "etc/hactl-lab/standins.yaml").write_text(
        yaml.safe_dump({"kubeadm": {"etcdAPICallTimeoutSeconds": 2}}))
    (root / "var/lib/etcd/member").mkdir()
    try:
        reset.phase_remove_etcd_member(cfg)
    finally:
        api.close()
    captured = capsys.readouterr()
    assert ("[reset] Failed to remove etcd member: etcdserver: member not found, please manually "
            "remove this etcd member using etcdctl") in captured.err
    assert captured.out == "[reset] Deleted contents of the etcd data directory: /var/lib/etcd\n"
    assert list((root / "var/lib/etcd").iterdir()) == []
    assert not reset.member_id_checked("v1.30.4") and reset.member_id_checked("v1.30.6")
    assert reset.member_id_checked("v1.32.0") and not reset.member_id_checked("v1.27.16")


def test_join_refuses_while_a_ready_node_of_its_name_exists(tmp_path: Path,
                                                            node: Node) -> None:  # noqa: F811
    init = node.kubeadm_with_kubelet("init", "--config", str(node.config))
    assert init.returncode == 0, init.stdout + init.stderr
    token = init.stdout.split("--token ", 1)[1].split()[0]
    ca_hash = init.stdout.split("--discovery-token-ca-cert-hash ", 1)[1].split()[0]
    ready = node.kubectl("wait", "--for=condition=Ready", "node/master01", "--timeout=60s")
    assert ready.returncode == 0, ready.stderr
    # a re-imaged host that joins under the name of the Node that is still Ready
    root = tmp_path / "reimaged"
    root.mkdir()
    config = tmp_path / "reimaged-join.yaml"
    config.write_text(yaml.safe_dump({
        "apiVersion": "kubeadm.k8s.io/v1beta3", "kind": "JoinConfiguration",
        "discovery": {"bootstrapToken": {"apiServerEndpoint": f"127.0.0.1:{node.port}",
                                         "token": token, "caCertHashes": [ca_hash]}},
        "nodeRegistration": {"name": "master01"}}))
    env = dict(node.env, HACTL_LAB_ROOT=str(root))
    res = subprocess.run(["/usr/bin/python3", "-m", "hactl.lab.standins.kubeadm", "join",
                          "--config", str(config), "--ignore-preflight-errors=all"],
                         capture_output=True, text=True, env=env, timeout=120, cwd="/")
    assert res.returncode == 1
    # (the reimaged root has no CRI socket and no ip_forward file: ignored, they are warnings)
    assert "\t[WARNING CRI]: container runtime is not running" in res.stderr
    assert res.stderr[res.stderr.index("error execution phase"):].startswith(
        'error execution phase kubelet-start: a Node with name "master01" and status "Ready" '
        "already exists in the cluster. You must delete the existing Node or change the name of "
        "this new joining Node\n")
    assert (root / "etc/kubernetes/pki/ca.crt").exists()  # written before the check, as for real
    assert not (root / "etc/kubernetes/kubelet.conf").exists()
    assert not (root / "var/lib/kubelet/config.yaml").exists()
