"""Files of host preparation (the spec's ``prepare`` section): the APT source of the Kubernetes
packages, the kernel modules and settings kubeadm's preflight and containerd need, and
containerd's configuration with the systemd cgroup driver. Pure: text from the spec."""

from __future__ import annotations

from hactl import hostlayout
from hactl.spec.models import Cluster
from hactl.spec.prepare import PrepareSettings

MODULES = ("overlay", "br_netfilter")
"""Loaded now and at boot: containerd's overlayfs snapshotter; bridged traffic seen by iptables."""

SYSCTLS = (
    ("net.bridge.bridge-nf-call-iptables", "1"),
    ("net.bridge.bridge-nf-call-ip6tables", "1"),
    ("net.ipv4.ip_forward", "1"),
)
"""Set now and at boot (Kubernetes' container runtime guide; kubeadm's preflight refuses
``ip_forward`` 0)."""

PACKAGES = ("kubeadm", "kubelet", "kubectl")
"""Installed on every master and worker at the spec's version, held there."""


def keyring_path(key: bytes) -> str:
    """Where the repository key goes: ``.asc`` when ASCII-armoured, ``.gpg`` when binary (APT
    tells the two apart by the extension)."""
    armoured = key.lstrip().startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    return hostlayout.APT_KEYRING_ASC if armoured else hostlayout.APT_KEYRING_GPG


def apt_source(prepare: PrepareSettings, version: tuple[int, int, int], keyring: str) -> str:
    """The one-line source, as Kubernetes' install guide writes it:
    ``deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/v1.30/deb/ /``."""
    repo = prepare.packages
    parts = ["deb", f"[signed-by={keyring}]", prepare.repository_url(version), repo.suite,
             *repo.components]
    return " ".join(parts) + "\n"


def package_version(cluster: Cluster, prepare: PrepareSettings) -> str:
    """``1.30.4-1.1``: the spec's version with the repository's Debian revision."""
    major, minor, patch = cluster.kubernetes.version_tuple
    return f"{major}.{minor}.{patch}-{prepare.packages.revision}"


def modules_load() -> str:
    return "# written by hactl (spec: prepare.kernel)\n" + "".join(f"{m}\n" for m in MODULES)


def sysctl_conf() -> str:
    return "# written by hactl (spec: prepare.kernel)\n" + "".join(f"{k} = {v}\n" for k, v in SYSCTLS)


def containerd_config() -> str:
    """containerd 1.6/1.7's configuration (version 2) with the runc runtime on the systemd cgroup
    driver, which kubeadm's default KubeletConfiguration (``cgroupDriver: systemd``) needs; every
    other setting is containerd's default."""
    return (
        "# written by hactl (spec: prepare.containerRuntime)\n"
        "version = 2\n"
        "\n"
        '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n'
        '  runtime_type = "io.containerd.runc.v2"\n'
        '  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
        "    SystemdCgroup = true\n"
    )
