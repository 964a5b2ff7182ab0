"""``kubeadm certs check-expiration`` and ``kubeadm version``."""

from __future__ import annotations

import datetime as dt
import os

import yaml

from .binversion import kubeadm_version_text, version_info
from .kubeadm_common import (
    KUBERNETES_DIR,
    PKI_DIR,
    P,
    out,
    read_file,
    warn,
)
from .kubeadm_reset import _cluster_doc
from .kubeadm_token import short_duration, tabulate
from .pkiutil import expiry, load_cert


def _expiry_row(name: str, cert_bytes: bytes | None, ca: str) -> list[str]:
    if cert_bytes is None:
        return [name, "", "", ca, "!MISSING! " + name]
    when = expiry(load_cert(cert_bytes))
    left = (when - dt.datetime.now(dt.UTC)).total_seconds()
    return [name, when.strftime("%b %d, %Y %H:%M UTC"), short_duration(left), ca, "no".ljust(8)]


def _read(path: str) -> bytes | None:
    try:
        return read_file(path)
    except OSError:
        return None


def _kubeconfig_cert(name: str) -> bytes | None:
    from .kubeadm_api import load_kubeconfig

    try:
        cert = load_kubeconfig(f"{KUBERNETES_DIR}/{name}").get("cert")
        return cert if isinstance(cert, bytes) else None
    except (OSError, ValueError, KeyError):
        return None


def run_check_expiration() -> int:
    out("[check-expiration] Reading configuration from the cluster...")
    out("[check-expiration] FYI: You can look at this config file with 'kubectl -n kube-system get cm kubeadm-config -o yaml'")
    doc = _cluster_doc()
    if doc is not None:
        local = "local" in (doc.get("etcd") or {})  # type: ignore[operator]
    else:
        warn("[check-expiration] Error reading configuration from the Cluster. Falling back to default configuration")
        local = os.path.exists(P(f"{PKI_DIR}/etcd/ca.crt"))
    rows = [["CERTIFICATE", "EXPIRES", "RESIDUAL TIME", "CERTIFICATE AUTHORITY", "EXTERNALLY MANAGED"]]
    entries: list[tuple[str, str, str]] = [
        ("admin.conf", "conf", "ca"), ("apiserver", "crt", "ca"),
        ("apiserver-etcd-client", "crt", "etcd-ca"), ("apiserver-kubelet-client", "crt", "ca"),
        ("controller-manager.conf", "conf", "ca"), ("etcd-healthcheck-client", "crt", "etcd-ca"),
        ("etcd-peer", "crt", "etcd-ca"), ("etcd-server", "crt", "etcd-ca"),
        ("front-proxy-client", "crt", "front-proxy-ca"), ("scheduler.conf", "conf", "ca"),
        ("super-admin.conf", "conf", "ca"),
    ]
    for name, kind, ca in entries:
        if ca == "etcd-ca" and not local:
            continue
        if kind == "conf":
            if name == "super-admin.conf" and not os.path.exists(P(f"{KUBERNETES_DIR}/{name}")):
                continue
            blob = _kubeconfig_cert(name)
        else:
            blob = _read(f"{PKI_DIR}/{name.replace('etcd-', 'etcd/', 1) if name.startswith('etcd-') else name}.crt")
        rows.append(_expiry_row(name, blob, ca))
    out("")
    out(tabulate(rows))
    cas = [["CERTIFICATE AUTHORITY", "EXPIRES", "RESIDUAL TIME", "EXTERNALLY MANAGED"]]
    for name, path in (("ca", "ca"), ("etcd-ca", "etcd/ca"), ("front-proxy-ca", "front-proxy-ca")):
        if name == "etcd-ca" and not local:
            continue
        row = _expiry_row(name, _read(f"{PKI_DIR}/{path}.crt"), "")
        cas.append([row[0], row[1], row[2], row[4]])
    out("")
    out(tabulate(cas))
    return 0


def run_version(output: str) -> int:
    text = kubeadm_version_text(output)
    if text is None:  # yaml
        text = yaml.safe_dump({"clientVersion": version_info()}, sort_keys=False).rstrip()
    out(text)
    return 0
