"""Shared plumbing of the kubeadm stand-in: paths, lab knobs, versions, errors, output.

Runs under Debian's /usr/bin/python3 (stdlib + cryptography + yaml only).

``HACTL_LAB_ROOT`` (tests only) relocates every absolute path this stand-in reads or writes
under a prefix, including the paths written *into* files (manifests, kubeconfigs), so that a
whole control plane can run from a temporary directory on loopback. Inside a lab node it is
unset and the real paths are used. ``HACTL_LAB_SYSTEMCTL`` (tests only) replaces the
``systemctl`` command kubeadm runs.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from typing import Any

import yaml

from . import binversion

KUBERNETES_DIR = "/etc/kubernetes"
MANIFESTS_DIR = "/etc/kubernetes/manifests"
PKI_DIR = "/etc/kubernetes/pki"
KUBELET_DIR = "/var/lib/kubelet"
ETCD_DATA_DIR = "/var/lib/etcd"
VERSIONS_FILE = "/etc/hactl-lab/versions"
KNOBS_FILE = "/etc/hactl-lab/standins.yaml"

DEFAULT_VERSION = "v1.30.4"
DEFAULT_TOKEN_TTL = 24 * 3600  # kubeadm's bootstrap token default: 24h
CERTS_TTL = 2 * 3600  # kubeadm's DefaultCertTokenDuration: the kubeadm-certs Secret lives 2h
ADMIN_GROUP = "kubeadm:cluster-admins"
NODE_BOOTSTRAP_GROUP = "system:bootstrappers:kubeadm:default-node-token"
STACK_HINT = "To see the stack trace of this error execute with --v=5 or higher"


class KubeadmError(Exception):
    """A failure printed like kubeadm prints it: ``error execution phase P: msg`` + exit 1."""

    def __init__(self, message: str, *, phase: str | None = None, code: int = 1) -> None:
        super().__init__(message)
        self.phase = phase
        self.code = code

    def render(self) -> str:
        head = f"error execution phase {self.phase}: " if self.phase else ""
        return f"{head}{self}\n{STACK_HINT}"


def root() -> str:
    return os.environ.get("HACTL_LAB_ROOT", "")


def P(path: str) -> str:
    """The real location of the in-node absolute ``path`` (relocated under HACTL_LAB_ROOT)."""
    prefix = root()
    if not prefix or not path.startswith("/") or path.startswith(prefix.rstrip("/") + "/"):
        return path
    return os.path.join(prefix, path.lstrip("/"))


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def warn(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def read_yaml(path: str) -> dict[str, Any]:
    try:
        with open(P(path)) as handle:
            data = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def knobs(section: str) -> dict[str, Any]:
    """Lab settings for one stand-in (``kubeadm`` or ``kubelet``) from /etc/hactl-lab/standins.yaml."""
    value = read_yaml(KNOBS_FILE).get(section)
    return value if isinstance(value, dict) else {}


def knob_seconds(section: str, name: str, default: float) -> float:
    value = knobs(section).get(name)
    try:
        return float(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def kubernetes_version() -> str:
    return binversion.kubernetes_version()


def version_tuple(value: str) -> tuple[int, ...]:
    nums = re.findall(r"\d+", value.split("-")[0].split("+")[0])
    return tuple(int(n) for n in nums[:3]) + (0,) * (3 - min(3, len(nums)))


def write_file(path: str, data: str | bytes, mode: int = 0o644) -> None:
    real = P(path)
    os.makedirs(os.path.dirname(real), exist_ok=True)
    blob = data.encode() if isinstance(data, str) else data
    tmp = f"{real}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(blob)
    os.replace(tmp, real)


def read_file(path: str) -> bytes:
    with open(P(path), "rb") as handle:
        return handle.read()


def hostname() -> str:
    return socket.gethostname().lower()


def _global_ipv4(dev: str | None = None) -> list[str]:
    argv = ["ip", "-4", "-o", "addr", "show"] + (["dev", dev] if dev else []) + ["scope", "global"]
    try:
        lines = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False).stdout.splitlines()
    except OSError:
        lines = []
    found = []
    for line in lines:
        match = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", line)
        if match:
            found.append(match.group(1))
    return found


def default_route_interface() -> str | None:
    """The interface of the IPv4 default route with the lowest metric, from /proc/net/route (as
    k8s.io/apimachinery's ``ChooseHostInterface`` reads it)."""
    best: tuple[int, str] | None = None
    try:
        with open("/proc/net/route", encoding="ascii") as handle:
            rows = handle.read().splitlines()[1:]
    except OSError:
        return None
    for row in rows:
        fields = row.split()
        if len(fields) >= 8 and fields[1] == "00000000" and fields[7] == "00000000":
            metric = int(fields[6])
            if best is None or metric < best[0]:
                best = (metric, fields[0])
    return best[1] if best else None


def default_route_address() -> str:
    """kubeadm's advertise-address default (``ChooseHostInterface``): the first global IPv4
    address of the interface that carries the default route; without a default route the first
    global IPv4 address, then 127.0.0.1. In a lab node that is ``eth1``, never the spec's address."""
    dev = default_route_interface()
    found = (_global_ipv4(dev) if dev else []) or _global_ipv4()
    return found[0] if found else "127.0.0.1"


def default_address() -> str:
    """The kubelet's node IP without ``--node-ip`` (``nodeutil``/``NodeAddress``): the host name
    resolved (the lab's /etc/hosts maps it to the spec's address) when that gives a non-loopback
    IPv4 address, else the default-route interface's address."""
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            address = str(info[4][0])
            if not address.startswith("127."):
                return address
    except OSError:
        pass
    return default_route_address()


def systemctl(*args: str) -> subprocess.CompletedProcess[str]:
    command = os.environ.get("HACTL_LAB_SYSTEMCTL", "systemctl").split()
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=60, check=False
    )


def port_in_use(port: int, host: str = "0.0.0.0") -> bool:
    """True when something listens on ``port`` (what kubeadm's Port-N check tests by binding).

    kubeadm binds with Go's ``net.Listen``, which sets SO_REUSEADDR: connections of a stopped
    server still in TIME_WAIT do not make the port "in use" (without it, a join right after a
    ``kubeadm reset`` failed with ``Port 6443 is in use`` for 60 s; real kubeadm does not)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        return True
    finally:
        sock.close()
    return False


def wait_for(predicate: Any, timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return True
        except Exception:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def split_hostport(endpoint: str, default_port: int = 6443) -> tuple[str, int]:
    value = endpoint.removeprefix("https://").rstrip("/")
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, int(rest.lstrip(":") or default_port)
    if value.count(":") == 1:
        host, port = value.split(":")
        return host, int(port)
    return value, default_port


def duration_seconds(value: str | int | float | None, default: float) -> float:
    """A Go duration (``24h0m0s``, ``2h``, ``90s``, ``0`` = never) in seconds."""
    if value is None or value == "":
        return default
    if isinstance(value, (int, float)):
        return float(value)
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", value)
    if not parts:
        if value.strip() == "0":
            return 0.0
        raise KubeadmError(f'invalid duration "{value}"')
    for number, unit in parts:
        total += float(number) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return total
