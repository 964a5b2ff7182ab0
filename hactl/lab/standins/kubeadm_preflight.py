"""kubeadm's preflight checks, with the real names and messages (the subset that applies here)."""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.request
from collections.abc import Callable

from .kubeadm_common import (
    ETCD_DATA_DIR,
    KUBERNETES_DIR,
    MANIFESTS_DIR,
    KubeadmError,
    P,
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


WARN_ONLY = {"Service-Kubelet"}


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
    names = ["kube-apiserver", "kube-controller-manager", "kube-scheduler"]
    if not cfg.external:
        names.append("etcd")
    checks = [port_check(cfg.bind_port), port_check(10259), port_check(10257)]
    checks += [file_available(f"{MANIFESTS_DIR}/{n}.yaml") for n in names]
    return checks


def etcd_checks(cfg: Config) -> list[Check]:
    if cfg.external:
        return external_etcd_checks(cfg)
    return [port_check(2379), port_check(2380), dir_available(cfg.etcd_data_dir or ETCD_DATA_DIR)]


def init_checks(cfg: Config) -> list[Check]:
    return [privileged(), *control_plane_checks(cfg), service_kubelet(), port_check(10250), *etcd_checks(cfg)]


def join_node_checks() -> list[Check]:
    return [privileged(), dir_available(MANIFESTS_DIR), service_kubelet(),
            file_available(f"{KUBERNETES_DIR}/kubelet.conf"),
            file_available(f"{KUBERNETES_DIR}/bootstrap-kubelet.conf"),
            port_check(10250), file_available(f"{KUBERNETES_DIR}/pki/ca.crt")]


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
