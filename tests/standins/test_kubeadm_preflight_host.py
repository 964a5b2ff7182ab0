"""The kubeadm stand-in's host checks (v1.30's addCommonChecks and friends): names, messages,
warning or error, and where they apply — against a node directory (HACTL_LAB_ROOT)."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

from hactl.lab.standins import kubeadm_certs as certs
from hactl.lab.standins import kubeadm_config as kconfig
from hactl.lab.standins import kubeadm_preflight as pf
from hactl.lab.standins.kubeadm_common import KubeadmError
from hactl.lab.standins.kubeadm_config import Config


def _run(checks: list[pf.Check], ignore: set[str] | None = None) -> str:
    try:
        pf.run_checks(checks, ignore or set())
    except KubeadmError as exc:
        return str(exc)
    return ""


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HACTL_LAB_ROOT", str(tmp_path))
    return tmp_path


def test_ip_forward_off_is_the_real_error(node: Path) -> None:
    path = node / "proc/sys/net/ipv4/ip_forward"
    path.parent.mkdir(parents=True)
    path.write_text("0\n")
    check = pf.file_content(pf.IPV4_FORWARD, "1")
    assert _run([check]) == (
        "[preflight] Some fatal errors occurred:\n"
        "\t[ERROR FileContent--proc-sys-net-ipv4-ip_forward]: /proc/sys/net/ipv4/ip_forward contents are "
        "not set to 1\n[preflight] If you know what you are doing, you can make a check non-fatal with "
        "`--ignore-preflight-errors=...`")
    path.write_text("1\n")
    assert _run([check]) == ""


def test_cri_socket_must_answer(node: Path) -> None:
    check = pf.cri_check(Config())
    assert check[0] == "CRI"
    message = check[1]()
    assert message is not None
    assert message.startswith('container runtime is not running: output: time="')
    assert ('validate CRI v1 runtime API for endpoint \\"unix:///var/run/containerd/containerd.sock\\"'
            in message)
    assert "dial unix /var/run/containerd/containerd.sock: connect: no such file or directory" in message
    assert message.endswith(", error: exit status 1")
    sock_path = node / "var/run/containerd/containerd.sock"
    sock_path.parent.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(sock_path))
        server.listen()
        assert check[1]() is None
    # nodeRegistration.criSocket is honoured
    assert "dial unix /run/crio/crio.sock" in (pf.cri_check(Config(cri_socket="unix:///run/crio/crio.sock"))[1]() or "")


def test_swap_is_a_warning(node: Path, capsys: pytest.CaptureFixture[str]) -> None:
    swaps = node / "proc/swaps"
    swaps.parent.mkdir(parents=True)
    swaps.write_text("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n")
    assert _run([pf.swap_check()]) == "" and "Swap" not in capsys.readouterr().err
    swaps.write_text(swaps.read_text() + "/swap.img                               file\t\t4194300\t\t0\t\t-2\n")
    assert _run([pf.swap_check()]) == ""
    assert ("\t[WARNING Swap]: swap is supported for cgroup v2 only; the NodeSwap feature gate of the kubelet "
            "is beta but disabled by default\n") in capsys.readouterr().err


def test_binaries_mandatory_and_optional(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    checks = pf.exec_checks("v1.30.4")
    assert [c[0] for c in checks] == [
        "FileExisting-conntrack", "FileExisting-ip", "FileExisting-iptables", "FileExisting-mount",
        "FileExisting-nsenter", "FileExisting-ebtables", "FileExisting-ethtool", "FileExisting-socat",
        "FileExisting-tc", "FileExisting-touch"]
    text = _run(checks)
    for name in ("conntrack", "ip", "iptables", "mount", "nsenter"):
        assert f"\t[ERROR FileExisting-{name}]: {name} not found in system path\n" in text
    assert "ERROR FileExisting-socat" not in text
    assert "\t[WARNING FileExisting-socat]: socat not found in system path\n" in capsys.readouterr().err
    assert "FileExisting-conntrack" not in [c[0] for c in pf.exec_checks("v1.32.0")]


def _fake_kubelet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    bin_dir = tmp_path / f"bin-{version}"
    bin_dir.mkdir()
    script = bin_dir / "kubelet"
    script.write_text(f'#!/bin/sh\necho "Kubernetes {version}"\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


@pytest.mark.parametrize(("kubelet", "control_plane", "expected"), [
    ("v1.30.4", "v1.30.4", None),
    ("v1.29.0", "v1.30.4", None),
    ("v1.31.0", "v1.30.4", 'the kubelet version is higher than the control plane version. This is not a '
                           'supported version skew and may lead to a malfunctional cluster. Kubelet version: '
                           '"1.31.0" Control plane version: "1.30.4"'),
    ("v1.31.0", "", None),  # join: no control-plane version to compare with
    ("v1.26.9", "", 'Kubelet version "1.26.9" is lower than kubeadm can support. Please upgrade kubelet'),
])
def test_kubelet_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kubelet: str, control_plane: str,
                         expected: str | None) -> None:
    monkeypatch.delenv("HACTL_LAB_ROOT", raising=False)
    monkeypatch.setattr(pf, "kubernetes_version", lambda: "v1.30.4")
    _fake_kubelet(tmp_path, monkeypatch, kubelet)
    name, run = pf.kubelet_version_check(control_plane)
    assert name == "KubeletVersion" and run() == expected


def test_version_gates(node: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    versions = node / "etc/hactl-lab/versions"
    versions.parent.mkdir(parents=True)
    versions.write_text("kubernetes: 1.30.4\n")
    # a control plane older than kubeadm's minor - 1: refused
    with pytest.raises(KubeadmError, match=r"^this version of kubeadm only supports deploying clusters with the "
                                           r"control plane version >= 1\.29\.0\. Current version: v1\.28\.3$"):
        kconfig.finish(Config(kubernetes_version="v1.28.3"))
    assert kconfig.finish(Config(kubernetes_version="v1.29.0")).kubernetes_version == "v1.29.0"
    # newer than kubeadm: a warning
    name, run = pf.kubernetes_version_check(Config(kubernetes_version="v1.31.1"))
    assert name in pf.WARN_ONLY and run() == ("Kubernetes version is greater than kubeadm version. Please "
                                              "consider to upgrade kubeadm. Kubernetes version: 1.31.1. "
                                              "Kubeadm version: 1.30.x")
    # the 1.30 binary does not know v1beta4; a 1.31 one does
    doc = tmp_path / "init.yaml"
    doc.write_text("apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\n")
    with pytest.raises(KubeadmError, match=re.escape('no kind "InitConfiguration" is registered for version '
                                                     '"kubeadm.k8s.io/v1beta4" in scheme')):
        kconfig.load_documents(str(doc))
    versions.write_text("kubernetes: 1.31.2\n")
    assert kconfig.load_documents(str(doc))[0]["kind"] == "InitConfiguration"


def test_join_checks_like_join_node_checks() -> None:
    worker = Config(discovery_endpoint="k8s-api.lab:6443")
    names = [c[0] for c in pf.join_node_checks(worker)]
    assert "DirAvailable--etc-kubernetes-manifests" not in names  # gone since 1.23
    assert "FileAvailable--etc-kubernetes-pki-ca.crt" in names
    assert "FileContent--proc-sys-net-ipv4-ip_forward" not in names  # a name, not an IPv4 address
    assert {"CRI", "Swap", "KubeletVersion", "Port-10250", "FileExisting-nsenter"} <= set(names)
    master = Config(discovery_endpoint="198.18.0.10:6443", control_plane=True)
    names = [c[0] for c in pf.join_node_checks(master)]
    assert "FileAvailable--etc-kubernetes-pki-ca.crt" not in names  # workers only
    assert "FileContent--proc-sys-net-ipv4-ip_forward" in names


def test_init_checks_order_and_external_etcd_certificates() -> None:
    ext = {"endpoints": ["https://198.18.0.21:2379"], "caFile": "/e/ca.crt", "certFile": "/e/c.crt",
           "keyFile": "/e/c.key"}
    cfg = Config(kubernetes_version="v1.30.4", etcd_external=ext, service_subnet="10.96.0.0/12",
                 advertise_address="198.18.0.11", node_name="master01")
    names = [c[0] for c in pf.init_checks(cfg)]
    assert names[:7] == ["IsPrivilegedUser", "NumCPU", "Mem", "KubernetesVersion", "Port-6443", "Port-10259",
                         "Port-10257"]
    assert names.index("CRI") < names.index("FileContent--proc-sys-net-ipv4-ip_forward") < names.index(
        "ExternalEtcdVersion")
    assert names[-3:] == ["ExternalEtcdClientCertificates"] * 3
    # the second half of a control-plane join: no common checks, no ip_forward; certificates
    # only when they are not downloaded
    second = [c[0] for c in pf.init_checks(cfg, secondary=True, download_certs=True)]
    assert "CRI" not in second and "ExternalEtcdVersion" not in second
    assert "ExternalEtcdClientCertificates" not in second
    assert "ExternalEtcdClientCertificates" in [c[0] for c in pf.init_checks(cfg, secondary=True)]
    stacked = [c[0] for c in pf.init_checks(Config(kubernetes_version="v1.30.4", advertise_address="10.0.0.1"))]
    assert stacked[-3:] == ["Port-2379", "Port-2380", "DirAvailable--var-lib-etcd"]


def test_external_etcd_certificates_message(node: Path) -> None:
    cfg = Config(etcd_external={"caFile": "/etc/kubernetes/pki/etcd/ca.crt"})
    assert _run(pf.external_etcd_certificates(cfg)).splitlines()[1] == (
        "\t[ERROR ExternalEtcdClientCertificates]: /etc/kubernetes/pki/etcd/ca.crt doesn't exist")


def test_cpu_and_memory_pass_on_this_machine() -> None:
    # (the lab shares this 2-CPU machine: NumCPU passes, like a 2-vCPU VM)
    assert pf.num_cpu()[1]() is None and pf.mem()[1]() is None


def test_certs_to_transfer_always_has_the_external_entries() -> None:
    files = certs.files_to_transfer(Config(etcd_external={"endpoints": ["https://e:2379"]}))
    assert files["external-etcd-ca.crt"] == "" and "external-etcd.key" in files


def test_join_without_pins_is_a_validation_error_exit_3() -> None:
    from hactl.lab.standins.kubeadm_join import validate_discovery

    with pytest.raises(KubeadmError) as err:
        validate_discovery(Config(discovery_endpoint="k8s-api.lab:6443", discovery_token="abcdef.0123456789abcdef"))
    assert err.value.code == 3 and err.value.phase is None
    assert str(err.value).startswith('discovery.bootstrapToken.caCertHashes: Invalid value: "": using token-based '
                                     "discovery without caCertHashes can be unsafe.")
    validate_discovery(Config(unsafe_skip_ca=True))
