"""kubeadm's preflight checks, with the real names and messages (v1.30's ``InitNodeChecks`` /
``JoinNodeChecks`` / ``addCommonChecks``, ``cmd/kubeadm/app/preflight/checks.go`` and
``checks_linux.go``). Left out, see docs/standins/kubeadm.md: Firewalld, HTTPProxy,
HTTPProxyCIDR, SystemVerification and FileExisting-crictl."""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Callable

from .kubeadm_common import (
    ETCD_DATA_DIR,
    KUBERNETES_DIR,
    MANIFESTS_DIR,
    KubeadmError,
    P,
    kubernetes_version,
    out,
    port_in_use,
    root,
    version_tuple,
)
from .kubeadm_config import Config

Check = tuple[str, Callable[[], str | None]]  # (name, run() -> error message or None)


def _name(path: str) -> str:
    return path.replace("/", "-")


def port_check(port: int) -> Check:
    host = "127.0.0.1" if root() else ""
    return (f"Port-{port}", lambda: f"Port {port} is in use" if port_in_use(port, host) else None)


def file_available(path: str) -> Check:
    return (f"FileAvailable-{_name(path)}",
            lambda: f"{path} already exists" if os.path.exists(P(path)) else None)


def dir_available(path: str) -> Check:
    def run() -> str | None:
        try:
            return f"{path} is not empty" if os.listdir(P(path)) else None
        except FileNotFoundError:
            return None
    return (f"DirAvailable-{_name(path)}", run)


def privileged() -> Check:
    return ("IsPrivilegedUser", lambda: None if os.geteuid() == 0 else "user is not running as root")


WARN_ONLY = {"Service-Kubelet", "Swap", "KubernetesVersion", "Hostname", "FileExisting-ebtables",
             "FileExisting-ethtool", "FileExisting-socat", "FileExisting-tc", "FileExisting-touch"}
"""Checks whose findings are warnings (kubeadm returns them as ``warnings``, not ``errorList``)."""

IPV4_FORWARD = "/proc/sys/net/ipv4/ip_forward"
DEFAULT_CRI_SOCKET = "unix:///var/run/containerd/containerd.sock"
CONTROL_PLANE_NUM_CPU = 2
CONTROL_PLANE_MEM_MB = 1700
SWAP_MESSAGE = ("swap is supported for cgroup v2 only; the NodeSwap feature gate of the kubelet is beta "
                "but disabled by default")


def num_cpu() -> Check:
    """``NumCPUCheck``: Go's runtime.NumCPU counts the CPUs of the process's affinity mask."""
    def run() -> str | None:
        count = len(os.sched_getaffinity(0))
        if count < CONTROL_PLANE_NUM_CPU:
            return f"the number of available CPUs {count} is less than the required {CONTROL_PLANE_NUM_CPU}"
        return None
    return ("NumCPU", run)


def mem() -> Check:
    """``MemCheck``: sysinfo's total RAM in MB (MemTotal of /proc/meminfo is the same number)."""
    def run() -> str | None:
        try:
            with open("/proc/meminfo", encoding="ascii") as handle:
                kib = int(next(line for line in handle if line.startswith("MemTotal:")).split()[1])
        except (OSError, StopIteration, ValueError) as exc:
            return f"failed to get system info: {exc}"
        actual = kib // 1024
        if actual < CONTROL_PLANE_MEM_MB:
            return f"the system RAM ({actual} MB) is less than the minimum {CONTROL_PLANE_MEM_MB} MB"
        return None
    return ("Mem", run)


def _semver(value: str) -> str:
    return ".".join(str(n) for n in version_tuple(value))


def kubernetes_version_check(cfg: Config) -> Check:
    """``KubernetesVersionCheck``: a control plane newer than kubeadm's minor (a warning)."""
    def run() -> str | None:
        kubeadm = version_tuple(kubernetes_version())
        wanted = version_tuple(cfg.kubernetes_version)
        if wanted[:2] > kubeadm[:2]:
            return ("Kubernetes version is greater than kubeadm version. Please consider to upgrade kubeadm. "
                    f"Kubernetes version: {_semver(cfg.kubernetes_version)}. Kubeadm version: "
                    f"{kubeadm[0]}.{kubeadm[1]}.x")
        return None
    return ("KubernetesVersion", run)


def cri_check(cfg: Config) -> Check:
    """``ContainerRuntimeCheck`` (v1.30: ``crictl -r <socket> info``): the runtime must answer on
    its socket. The stand-in connects to the socket itself (crictl is not packaged in Debian)
    and words a failure as crictl's ``validate service connection`` error."""
    endpoint = cfg.cri_socket or DEFAULT_CRI_SOCKET
    if "://" not in endpoint:
        endpoint = "unix://" + endpoint
    path = endpoint.removeprefix("unix://")

    def run() -> str | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(2)
        try:
            sock.connect(P(path))
            return None
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            reason = reason[0].lower() + reason[1:] if reason else reason
        finally:
            sock.close()
        stamp = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        return ("container runtime is not running: output: "
                f'time="{stamp}" level=fatal msg="validate service connection: validate CRI v1 runtime API '
                f'for endpoint \\"{endpoint}\\": rpc error: code = Unavailable desc = connection error: '
                f'desc = \\"transport: Error while dialing: dial unix {path}: connect: {reason}\\""\n'
                ", error: exit status 1")
    return ("CRI", run)


def swap_check() -> Check:
    """``SwapCheck``: more than the header line in /proc/swaps (a warning since 1.28)."""
    def run() -> str | None:
        try:
            with open(P("/proc/swaps"), encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except OSError:
            return None
        return SWAP_MESSAGE if len(lines) > 1 else None
    return ("Swap", run)


def in_path(executable: str) -> Check:
    """``InPathCheck``: mandatory ones are errors, the others warnings (:data:`WARN_ONLY`)."""
    return (f"FileExisting-{executable}",
            lambda: None if shutil.which(executable) else f"{executable} not found in system path")


def exec_checks(kubernetes: str) -> list[Check]:
    """``addExecChecks`` of v1.30 without crictl: conntrack (below 1.32), ip, iptables, mount,
    nsenter mandatory; ebtables, ethtool, socat, tc, touch optional."""
    names = ["conntrack"] if version_tuple(kubernetes or kubernetes_version()) < (1, 32, 0) else []
    names += ["ip", "iptables", "mount", "nsenter", "ebtables", "ethtool", "socat", "tc", "touch"]
    return [in_path(n) for n in names]


def hostname_check(node_name: str) -> Check:
    """``HostnameCheck``: the node name must resolve (a warning)."""
    def run() -> str | None:
        try:
            socket.getaddrinfo(node_name, None)
        except OSError:
            return f'hostname "{node_name}" could not be reached'
        return None
    return ("Hostname", run)


MINIMUM_KUBELET_SKEW = 3  # MinimumKubeletVersion: kubeadm's minor - 3 (since 1.29)


def kubelet_version_check(control_plane: str) -> Check:
    """``KubeletVersionCheck``: ``kubelet --version`` not older than kubeadm's minor - 3, and (on
    init, where the control-plane version is known) not newer than the control plane's minor."""
    def run() -> str | None:
        try:
            proc = subprocess.run(["kubelet", "--version"], capture_output=True, text=True, timeout=30, check=False)
        except FileNotFoundError:
            return 'couldn\'t get kubelet version: exec: "kubelet": executable file not found in $PATH'
        match = re.search(r"Kubernetes v?(\d+\.\d+\.\d+\S*)", proc.stdout)
        if proc.returncode != 0 or match is None:
            return f"couldn't get kubelet version: {proc.stderr.strip() or proc.stdout.strip()}"
        kubelet = match.group(1)
        major, minor, _ = version_tuple(kubernetes_version())
        minimum = (major, minor - MINIMUM_KUBELET_SKEW, 0)
        if version_tuple(kubelet) < minimum:
            return f'Kubelet version "{kubelet}" is lower than kubeadm can support. Please upgrade kubelet'
        if control_plane:
            k8s = version_tuple(control_plane)
            if version_tuple(kubelet)[0] > k8s[0] or version_tuple(kubelet)[1] > k8s[1]:
                return ("the kubelet version is higher than the control plane version. This is not a supported "
                        f'version skew and may lead to a malfunctional cluster. Kubelet version: "{kubelet}" '
                        f'Control plane version: "{_semver(control_plane)}"')
        return None
    return ("KubeletVersion", run)


def file_content(path: str, content: str) -> Check:
    """``FileContentCheck``: the file starts with ``content``."""
    def run() -> str | None:
        try:
            with open(P(path), encoding="utf-8") as handle:
                data = handle.read(len(content))
        except OSError:
            return f"{path} does not exist"
        return None if data == content else f"{path} contents are not set to {content}"
    return (f"FileContent-{_name(path)}", run)


def file_existing(path: str, label: str = "") -> Check:
    return (label or f"FileExisting-{_name(path)}",
            lambda: None if os.path.exists(P(path)) else f"{path} doesn't exist")


def common_checks(cfg: Config, control_plane_version: str) -> list[Check]:
    """``addCommonChecks``: the runtime, swap, the binaries, the host name, the kubelet."""
    return [cri_check(cfg), swap_check(), *exec_checks(control_plane_version or cfg.kubernetes_version),
            hostname_check(cfg.node_name), kubelet_version_check(control_plane_version),
            service_kubelet(), port_check(10250)]


def _is_ipv4(value: str) -> bool:
    try:
        socket.inet_aton(value)
    except OSError:
        return False
    return value.count(".") == 3


def service_kubelet() -> Check:
    """A warning only, like kubeadm's ServiceCheck{Service: kubelet, CheckIfActive: false}."""
    def run() -> str | None:
        from .kubeadm_common import systemctl

        try:
            state = systemctl("is-enabled", "kubelet").stdout.strip()
        except OSError:
            return None
        if state == "enabled" or root():
            return None
        return "kubelet service is not enabled, please run 'systemctl enable kubelet.service'"
    return ("Service-Kubelet", run)


def min_external_etcd(kubernetes_version: str) -> str:
    return "3.5.11" if version_tuple(kubernetes_version) >= (1, 31, 0) else "3.2.18"


def etcd_version(endpoint: str, ca: str, cert: str, key: str) -> str:
    ctx = ssl.create_default_context(cafile=P(ca)) if ca else ssl.create_default_context()
    if cert and key:
        ctx.load_cert_chain(P(cert), P(key))
    url = endpoint.rstrip("/") + "/version"
    with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
        return str(json.loads(resp.read())["etcdserver"])


def external_etcd_checks(cfg: Config) -> list[Check]:
    ext = cfg.etcd_external or {}
    minimum = min_external_etcd(cfg.kubernetes_version)
    checks: list[Check] = []
    for endpoint in ext.get("endpoints") or []:
        def run(endpoint: str = str(endpoint)) -> str | None:
            try:
                current = etcd_version(endpoint, str(ext.get("caFile", "")), str(ext.get("certFile", "")),
                                       str(ext.get("keyFile", "")))
            except Exception as exc:  # the real check surfaces the Go http error
                reason = getattr(exc, "reason", exc)
                return f'Get "{endpoint.rstrip("/")}/version": {reason}'
            if version_tuple(current) < version_tuple(minimum):
                return (f"this version of kubeadm only supports external etcd version >= {minimum}. "
                        f"Current version: {current}")
            return None
        checks.append(("ExternalEtcdVersion", run))
    return checks


def control_plane_checks(cfg: Config) -> list[Check]:
    """The head of ``InitNodeChecks``: CPUs, memory, the version, the ports, the manifests (all
    four, whatever the etcd: kubeadm checks etcd.yaml with external etcd too)."""
    names = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"]
    checks = [num_cpu(), mem(), kubernetes_version_check(cfg),
              port_check(cfg.bind_port), port_check(10259), port_check(10257)]
    checks += [file_available(f"{MANIFESTS_DIR}/{n}.yaml") for n in names]
    return checks


def external_etcd_certificates(cfg: Config) -> list[Check]:
    ext = cfg.etcd_external or {}
    return [file_existing(str(ext[key]), "ExternalEtcdClientCertificates")
            for key in ("caFile", "certFile", "keyFile") if ext.get(key)]


def init_checks(cfg: Config, *, secondary: bool = False, download_certs: bool = False) -> list[Check]:
    """``InitNodeChecks`` (``secondary``: the second half of a control-plane join, which skips the
    common checks, ip_forward and the external etcd version)."""
    checks = [privileged(), *control_plane_checks(cfg)]
    if not secondary:
        checks += common_checks(cfg, cfg.kubernetes_version)
        ipv4 = any("." in c for c in (cfg.service_subnet + "," + cfg.pod_subnet).split(",") if c.strip())
        if ipv4 or _is_ipv4(cfg.advertise_address):
            checks.append(file_content(IPV4_FORWARD, "1"))
        if cfg.external:
            checks += external_etcd_checks(cfg)
    if not cfg.external:
        checks += [port_check(2379), port_check(2380), dir_available(cfg.etcd_data_dir or ETCD_DATA_DIR)]
    if cfg.external and not (secondary and download_certs):
        checks += external_etcd_certificates(cfg)
    return checks


def join_node_checks(cfg: Config) -> list[Check]:
    """``JoinNodeChecks``: no manifests-dir check (gone since 1.23), the CA file only on worker
    joins, ip_forward only when the discovery endpoint is an IPv4 address."""
    checks = [privileged(), file_available(f"{KUBERNETES_DIR}/kubelet.conf"),
              file_available(f"{KUBERNETES_DIR}/bootstrap-kubelet.conf"), *common_checks(cfg, "")]
    if not cfg.control_plane:
        checks.append(file_available(f"{KUBERNETES_DIR}/pki/ca.crt"))
    host = cfg.discovery_endpoint.rsplit(":", 1)[0] if cfg.discovery_endpoint else ""
    if _is_ipv4(host):
        checks.append(file_content(IPV4_FORWARD, "1"))
    return checks


def run_checks(checks: list[Check], ignore: set[str]) -> None:
    """Run ``checks``; ignored failures become warnings; others abort like kubeadm (exit 1)."""
    ignored = {i.lower() for i in ignore}
    errors: list[str] = []
    for name, check in checks:
        message = check()
        if message is None:
            continue
        if "all" in ignored or name.lower() in ignored or name in WARN_ONLY:
            sys.stderr.write(f"\t[WARNING {name}]: {message}\n")
        else:
            errors.append(f"\t[ERROR {name}]: {message}")
    if errors:
        body = "\n".join(errors)
        raise KubeadmError(
            f"[preflight] Some fatal errors occurred:\n{body}\n[preflight] If you know what you are "
            "doing, you can make a check non-fatal with `--ignore-preflight-errors=...`",
            phase="preflight",
        )


def preflight(checks: list[Check], ignore: set[str], banner: str = "[preflight] Running pre-flight checks") -> None:
    out(banner)
    run_checks(checks, ignore)
