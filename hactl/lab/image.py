"""The node image: files the lab writes into each node's private /etc, /var and /root.

A node's /etc and /var are overlays over the machine's own; this module writes into their upper
(writable) dirs before the node boots: hostname, hosts, its own SSH host key and sshd_config, the
lab's authorized key, /etc/hactl-lab/{versions,standins.yaml}, the stand-ins' IMAGE_FILES, and
whiteouts that hide the machine's SSH host keys and its enabled units (a fresh node runs only
sshd until someone enables more).

A **prepared** node (the default) also looks like a host made ready for kubeadm the way the
Kubernetes documentation says ("Installing a container runtime"): ``/etc/sysctl.d/
99-kubernetes-cri.conf`` (``net.ipv4.ip_forward = 1``, ``net.bridge.bridge-nf-call-iptables = 1``,
applied at every boot by :mod:`hactl.lab.nodeinit` as systemd-sysctl does), ``/etc/modules-load.d/
containerd.conf``, and on Kubernetes nodes (masters, workers) Debian's real containerd enabled,
with ``/etc/containerd/config.toml`` setting ``SystemdCgroup = true``. An unprepared node has
none of it: ``net.ipv4.ip_forward`` stays 0 (a new network namespace's default) and no
container runtime runs.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import hactl
from hactl.lab import standins
from hactl.lab.nodeinit import IN_NODE_SRC
from hactl.lab.topology import Node, Topology

REPO_ROOT = str(Path(hactl.__file__).resolve().parent.parent)
OVERLAID = ("/etc", "/var")
KEEP_ENABLED = {"ssh.service", "sshd.service"}
WANTS = "/etc/systemd/system/multi-user.target.wants"

SYSCTL_FILE = "/etc/sysctl.d/99-kubernetes-cri.conf"
SYSCTL_CONF = """\
# hactl lab: a host prepared for kubeadm (Kubernetes docs, "Installing a container runtime")
net.bridge.bridge-nf-call-iptables  = 1
net.bridge.bridge-nf-call-ip6tables = 1
net.ipv4.ip_forward                 = 1
"""
MODULES_FILE = "/etc/modules-load.d/containerd.conf"
MODULES_CONF = "overlay\nbr_netfilter\n"
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
CONTAINERD_TOML = """\
# hactl lab: containerd for the kubelet (systemd cgroup driver, as kubeadm's default
# KubeletConfiguration cgroupDriver: systemd expects)
version = 2

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.9"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "/etc/cni/net.d"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = true
  [plugins."io.containerd.internal.v1.opt"]
    path = "/var/lib/containerd/opt"
"""
CONTAINERD_UNIT = "containerd.service"

SSHD_CONFIG = """\
# hactl lab node {name}: written by `hactl lab up`
Port {port}
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
MaxSessions 64
MaxStartups 1000:30:2000
LoginGraceTime 30
LogLevel ERROR
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
"""


def keypair(comment: str) -> tuple[bytes, bytes]:
    """A new ed25519 key: (OpenSSH private key, ``ssh-ed25519 AAAA… comment`` line)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public + b" " + comment.encode() + b"\n"


def _write(path: str, data: bytes | str, mode: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".hactl-tmp"
    with open(tmp, "wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _upper_path(node: Node, path: str) -> str:
    """Where the in-node absolute ``path`` lives in the node's upper dirs (creating parents
    with the lower directories' owner and mode, so the merged view looks like the machine's)."""
    for target in OVERLAID:
        if path.startswith(target + "/"):
            rel = os.path.relpath(path, target)
            upper = node.upper(target)
            parts = Path(rel).parts[:-1]
            for depth in range(1, len(parts) + 1):
                sub = os.path.join(*parts[:depth])
                made, lower = os.path.join(upper, sub), os.path.join(target, sub)
                if not os.path.isdir(made):
                    os.makedirs(made, exist_ok=True)
                    if os.path.isdir(lower) and not os.path.islink(lower):
                        st = os.stat(lower)
                        os.chown(made, st.st_uid, st.st_gid)
                        os.chmod(made, stat.S_IMODE(st.st_mode))
            return os.path.join(upper, rel)
    raise ValueError(f"{path}: node image files must lie under /etc or /var")


def _whiteout(node: Node, path: str) -> None:
    real = _upper_path(node, path)
    if not os.path.lexists(real):
        os.mknod(real, stat.S_IFCHR | 0o000, os.makedev(0, 0))


def prepare_lab(topo: Topology) -> None:
    """State dir, marker, the lab's SSH key pair and the shim dir (idempotent)."""
    os.makedirs(topo.state_dir, mode=0o700, exist_ok=True)
    if not os.path.exists(topo.marker):
        _write(topo.marker, f"hactl lab {topo.name}\n", 0o600)
    if not os.path.exists(topo.key_file):
        private, public = keypair(f"hactl-lab-{topo.name}")
        _write(topo.key_file, private, 0o600)
        _write(topo.key_file + ".pub", public, 0o644)
    os.makedirs(topo.bin_dir, exist_ok=True)
    shims = standins.available_shims()
    for entry in os.listdir(topo.bin_dir):
        if entry not in shims:  # running nodes see this dir live: replace, never empty it
            os.unlink(os.path.join(topo.bin_dir, entry))
    for shim, module in shims.items():
        script = standins.shim_script(shim, module, IN_NODE_SRC)
        _write(os.path.join(topo.bin_dir, shim), script, 0o755)
    _precompile()


def _precompile() -> None:
    """Nodes see the checkout read-only: compile what they run once, with the nodes' Python."""
    pkg = os.path.join(REPO_ROOT, "hactl")
    subprocess.run(
        ["/usr/bin/python3", "-m", "compileall", "-q", os.path.join(pkg, "lab"),
         os.path.join(pkg, "__init__.py"), os.path.join(pkg, "render")],
        check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
    )


def prepare_node(
    topo: Topology, node: Node, knobs: dict[str, object], files: dict[str, tuple[str, int]],
    prepared: bool = True,
) -> None:
    """Write ``node``'s image (only while it is powered off). ``prepared``: the host preparation
    of the module docstring, decided at the node's first boot (a later call keeps the node's)."""
    first_boot = not os.path.isdir(node.upper("/etc"))
    for target in OVERLAID:
        os.makedirs(node.upper(target), exist_ok=True)
        os.makedirs(node.work(target), exist_ok=True)
    root_dir, tmp_dir = os.path.join(node.dir, "root"), os.path.join(node.dir, "tmp")
    os.makedirs(tmp_dir, exist_ok=True)
    os.chmod(tmp_dir, 0o1777)
    os.makedirs(os.path.join(root_dir, ".ssh"), exist_ok=True)
    os.chmod(root_dir, 0o700)
    os.chmod(os.path.join(root_dir, ".ssh"), 0o700)
    with open(topo.key_file + ".pub", "rb") as handle:
        _write(os.path.join(root_dir, ".ssh", "authorized_keys"), handle.read(), 0o600)

    if first_boot:
        for name in os.listdir("/etc/ssh"):
            if name.startswith("ssh_host_"):
                _whiteout(node, f"/etc/ssh/{name}")
        etc_units = "/etc/systemd/system"
        for wants in os.listdir(etc_units) if os.path.isdir(etc_units) else []:
            if wants.endswith((".wants", ".requires")):
                for unit in os.listdir(os.path.join(etc_units, wants)):
                    if unit not in KEEP_ENABLED:
                        _whiteout(node, f"{etc_units}/{wants}/{unit}")
        _prepare_host(node, prepared)
        hidden = topo.state_dir.rstrip("/")
        if os.path.basename(os.path.dirname(hidden)) == "hactl-lab":
            hidden = os.path.dirname(hidden)  # /var/lib/hactl-lab: no lab's keys in any node
        if hidden.startswith(tuple(t + "/" for t in OVERLAID)):
            _whiteout(node, hidden)
    host_key = _upper_path(node, "/etc/ssh/ssh_host_ed25519_key")
    if not os.path.isfile(host_key) or not os.path.isfile(host_key + ".pub"):  # not a whiteout
        private, public = keypair(f"root@{node.name}")
        _write(host_key, private, 0o600)
        _write(host_key + ".pub", public, 0o644)

    _write(_upper_path(node, "/etc/hostname"), node.name + "\n", 0o644)
    _write(_upper_path(node, "/etc/hosts"), topo.hosts_file(), 0o644)
    _write(_upper_path(node, "/etc/ssh/sshd_config"), SSHD_CONFIG.format(name=node.name, port=node.ssh_port), 0o644)
    versions = {"kubernetes": topo.kubernetes_version}
    if topo.etcd_version:
        versions["etcd"] = topo.etcd_version
    _write(_upper_path(node, "/etc/hactl-lab/versions"), yaml.safe_dump(versions), 0o644)
    _write(
        _upper_path(node, "/etc/hactl-lab/standins.yaml"),
        "# Lab knobs for the stand-ins (docs/lab.md); written by `hactl lab up`\n"
        + yaml.safe_dump(knobs or {}, sort_keys=True),
        0o644,
    )
    for path, (content, mode) in sorted(files.items()):
        _write(_upper_path(node, path), content, mode)
    config = {
        "name": node.name,
        "pid_file": node.pid_file,
        "root_dir": root_dir,
        "tmp_dir": tmp_dir,
        "bin_dir": topo.bin_dir,
        "overlays": {t: {"upper": node.upper(t), "work": node.work(t)} for t in OVERLAID},
        "pythonpath": REPO_ROOT,
    }
    _write(node.config_file, json.dumps(config, indent=2), 0o600)


def _prepare_host(node: Node, prepared: bool) -> None:
    """The sysctl/module files and, on Kubernetes nodes, containerd enabled (or, unprepared,
    hidden: the machine's own enablement link is whited out like every other unit's)."""
    link = _upper_path(node, f"{WANTS}/{CONTAINERD_UNIT}")
    if os.path.lexists(link):
        os.unlink(link)
    if not prepared:
        _whiteout(node, f"{WANTS}/{CONTAINERD_UNIT}")
        return
    _write(_upper_path(node, SYSCTL_FILE), SYSCTL_CONF, 0o644)
    _write(_upper_path(node, MODULES_FILE), MODULES_CONF, 0o644)
    if node.kube:
        _write(_upper_path(node, CONTAINERD_CONFIG), CONTAINERD_TOML, 0o644)
        os.symlink(f"/lib/systemd/system/{CONTAINERD_UNIT}", link)
    else:
        _whiteout(node, f"{WANTS}/{CONTAINERD_UNIT}")


def is_prepared(node: Node) -> bool:
    """Whether ``node`` was created prepared (its image holds the sysctl file)."""
    return os.path.isfile(_upper_path(node, SYSCTL_FILE))


def host_public_key(node: Node) -> str | None:
    try:
        with open(_upper_path(node, "/etc/ssh/ssh_host_ed25519_key.pub"), encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return None


def write_known_hosts(topo: Topology) -> None:
    lines = []
    for node in topo.nodes:
        text = host_public_key(node)
        if text:
            kind, blob = text.split()[:2]
            names = node.name + "," + str(node.address) if node.ssh_port == 22 else f"[{node.address}]:{node.ssh_port}"
            lines.append(f"{names} {kind} {blob}\n")
    _write(topo.known_hosts, "".join(lines), 0o644)
