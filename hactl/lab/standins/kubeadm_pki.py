"""kubeadm's ``certs`` phase: the real PKI tree under /etc/kubernetes/pki (made by :mod:`.pkiutil`)."""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from .kubeadm_common import PKI_DIR, P, out, read_file, split_hostport, write_file
from .kubeadm_config import Config
from .pkiutil import Pair, key_pem, new_ca, new_key, new_signed, public_pem, signed_by

ADMINS = "kubeadm:cluster-admins"

# name -> (CA name, CN, organizations, usage); SANs are computed per certificate below.
LEAVES: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "apiserver": ("ca", "kube-apiserver", (), "server"),
    "apiserver-kubelet-client": ("ca", "kube-apiserver-kubelet-client", (ADMINS,), "client"),
    "front-proxy-client": ("front-proxy-ca", "front-proxy-client", (), "client"),
    "etcd/server": ("etcd/ca", "", (), "peer"),
    "etcd/peer": ("etcd/ca", "", (), "peer"),
    "etcd/healthcheck-client": ("etcd/ca", "kube-etcd-healthcheck-client", (), "client"),
    "apiserver-etcd-client": ("etcd/ca", "kube-apiserver-etcd-client", (), "client"),
}
CA_NAMES = {"ca": "kubernetes", "front-proxy-ca": "front-proxy-ca", "etcd/ca": "etcd-ca"}


def pki_path(name: str, ext: str) -> str:
    return f"{PKI_DIR}/{name}.{ext}"


def load_pair(name: str) -> Pair | None:
    try:
        return Pair.from_pem(read_file(pki_path(name, "crt")), read_file(pki_path(name, "key")))
    except (OSError, ValueError):
        return None


def write_pair(name: str, pair: Pair) -> None:
    write_file(pki_path(name, "crt"), pair.cert_pem(), 0o644)
    write_file(pki_path(name, "key"), pair.key_pem(), 0o600)


def first_service_ip(subnet: str) -> str:
    net = ipaddress.ip_network(subnet.split(",")[0].strip(), strict=False)
    return str(net.network_address + 1)


def _split_names(values: list[str]) -> tuple[list[str], list[str]]:
    dns, ips = [], []
    for value in values:
        try:
            ipaddress.ip_address(value)
            ips.append(value)
        except ValueError:
            dns.append(value)
    return dns, ips


def sans_for(name: str, cfg: Config) -> tuple[list[str], list[str]]:
    if name == "apiserver":
        host, _ = split_hostport(cfg.endpoint())
        names = [cfg.node_name, "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 f"kubernetes.default.svc.{cfg.dns_domain}", host, *cfg.cert_sans]
        dns, ips = _split_names(names)
        return dns, [first_service_ip(cfg.service_subnet), cfg.advertise_address, *ips]
    if name in ("etcd/server", "etcd/peer"):
        key = "serverCertSANs" if name == "etcd/server" else "peerCertSANs"
        dns, ips = _split_names([str(s) for s in cfg.etcd_local.get(key) or []])
        extra_ips = ["127.0.0.1", "::1"] if name == "etcd/server" else []
        return [cfg.node_name, "localhost", *dns], [cfg.advertise_address, *extra_ips, *ips]
    return [], []


def ensure_ca(name: str, cfg: Config, *, create: bool = True) -> Pair:
    pair = load_pair(name)
    label = name.replace("/", "-")
    if pair is not None:
        out(f"[certs] Using existing {label} certificate authority")
        return pair
    if not create:
        raise FileNotFoundError(pki_path(name, "key"))
    out(f'[certs] Generating "{label}" certificate and key')
    pair = new_ca(CA_NAMES[name], kind=cfg.key_type)
    write_pair(name, pair)
    return pair


def ensure_sa(cfg: Config) -> None:
    if os.path.exists(P(f"{PKI_DIR}/sa.key")):
        out('[certs] Using the existing "sa" key')
        return
    out('[certs] Generating "sa" key and public key')
    key = new_key("rsa")
    write_file(f"{PKI_DIR}/sa.key", key_pem(key), 0o600)
    write_file(f"{PKI_DIR}/sa.pub", public_pem(key), 0o644)


def ensure_leaf(name: str, cas: dict[str, Pair], cfg: Config) -> None:
    ca_name, cn, orgs, usage = LEAVES[name]
    label = name.replace("/", "-")
    existing = load_pair(name)
    if existing is not None and signed_by(existing.cert, cas[ca_name].cert):
        out(f"[certs] Using existing {label} certificate and key on disk")
        return
    dns, ips = sans_for(name, cfg)
    out(f'[certs] Generating "{label}" certificate and key')
    if dns or ips:
        out(f"[certs] {label} serving cert is signed for DNS names [{' '.join(dict.fromkeys(dns))}]"
            f" and IPs [{' '.join(dict.fromkeys(ips))}]")
    pair = new_signed(cas[ca_name], cn or cfg.node_name, role=usage, organizations=orgs,
                      dns_names=dns, ips=ips, kind=cfg.key_type)
    write_pair(name, pair)


def create_pki(cfg: Config, *, have_cas: bool = False) -> dict[str, Pair]:
    """Every certificate kubeadm writes for a control-plane node; CAs are created unless
    ``have_cas`` (a joining control-plane node, whose CAs came from the kubeadm-certs Secret)."""
    out(f'[certs] Using certificateDir folder "{PKI_DIR}"')
    cas: dict[str, Pair] = {}
    for ca in ("ca", "front-proxy-ca") + (() if cfg.external else ("etcd/ca",)):
        cas[ca] = ensure_ca(ca, cfg, create=not have_cas)
    leaves = ["apiserver", "apiserver-kubelet-client", "front-proxy-client"]
    if cfg.external:
        out("[certs] External etcd mode: Skipping etcd/ca certificate authority generation")
        for leaf in ("etcd/server", "etcd/peer", "etcd/healthcheck-client", "apiserver-etcd-client"):
            out(f"[certs] External etcd mode: Skipping {leaf.replace('/', '-')} certificate generation")
    else:
        leaves += ["etcd/server", "etcd/peer", "etcd/healthcheck-client", "apiserver-etcd-client"]
    for leaf in leaves:
        ensure_leaf(leaf, cas, cfg)
    ensure_sa(cfg)
    return cas


def etcd_client_files(cfg: Config) -> dict[str, str]:
    """CA/cert/key the API server (and kubeadm) use to reach etcd."""
    if cfg.etcd_external is not None:
        ext: dict[str, Any] = cfg.etcd_external
        return {"ca": str(ext.get("caFile", "")), "cert": str(ext.get("certFile", "")),
                "key": str(ext.get("keyFile", ""))}
    return {"ca": pki_path("etcd/ca", "crt"), "cert": pki_path("apiserver-etcd-client", "crt"),
            "key": pki_path("apiserver-etcd-client", "key")}
