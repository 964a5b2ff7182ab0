"""``kubeadm init phase <phase> [all|local]``: one phase of ``init`` at a time.

The phases hactl runs to finish an interrupted ``kubeadm init`` (each prints the lines the real
phase prints). Like the real command, a phase with sub-phases run without one (``kubeadm init
phase certs``) only prints its help and does nothing; ``--config`` is mixed-checked like ``init``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from .kubeadm_api import Api, ApiError
from .kubeadm_common import KUBERNETES_DIR, MANIFESTS_DIR, KubeadmError, out, read_file
from .kubeadm_config import Config, finish, from_documents, load_documents
from .kubeadm_flags import Parser, check_mixed, parse

#: phase → the sub-phase the stand-in implements ("" = the phase has none).
PHASES = {
    "preflight": "", "certs": "all", "kubeconfig": "all", "etcd": "local", "control-plane": "all",
    "kubelet-start": "", "upload-config": "all", "upload-certs": "", "mark-control-plane": "",
    "bootstrap-token": "", "kubelet-finalize": "all", "addon": "all",
}
#: other sub-phases implemented next to the one in PHASES
EXTRA_SUBPHASES = {"addon": ("coredns", "kube-proxy")}
KUBECONFIGS = ["admin.conf", "super-admin.conf", "kubelet.conf", "controller-manager.conf", "scheduler.conf"]


def phase_parser(name: str) -> Parser:
    p = Parser(prog=f"kubeadm init phase {name}", add_help=True)
    p.add_argument("--config", default="")
    p.add_argument("--kubeconfig", default="/etc/kubernetes/admin.conf")
    p.add_argument("--v", "-v", default="0")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--node-name", default="")
    p.add_argument("--kubernetes-version", default="")
    p.add_argument("--control-plane-endpoint", default="")
    p.add_argument("--apiserver-advertise-address", default="")
    p.add_argument("--apiserver-bind-port", type=int, default=0)
    p.add_argument("--pod-network-cidr", default="")
    p.add_argument("--service-cidr", default="")
    p.add_argument("--service-dns-domain", default="")
    p.add_argument("--ignore-preflight-errors", action="append", default=[])
    if name == "upload-certs":
        p.add_argument("--upload-certs", action="store_true")
        p.add_argument("--certificate-key", default="")
        p.add_argument("--skip-certificate-key-print", action="store_true")
    if name == "bootstrap-token":
        p.add_argument("--skip-token-print", action="store_true")
    return p


def _config(args: argparse.Namespace) -> Config:
    cfg = Config()
    path = str(args.config)
    if path:
        from_documents(cfg, load_documents(path))
    for flag, attr in (("node_name", "node_name"), ("kubernetes_version", "kubernetes_version"),
                       ("control_plane_endpoint", "control_plane_endpoint"),
                       ("apiserver_advertise_address", "advertise_address"),
                       ("apiserver_bind_port", "bind_port"), ("pod_network_cidr", "pod_subnet"),
                       ("service_cidr", "service_subnet"), ("service_dns_domain", "dns_domain"),
                       ("certificate_key", "certificate_key")):
        value = getattr(args, flag, None)
        if value:
            setattr(cfg, attr, value)
    return finish(cfg)


def _api(kubeconfig: str) -> Api:
    return Api.from_kubeconfig(kubeconfig, retry_seconds=30)


def run_phase(argv: Sequence[str]) -> int:
    """``argv`` = what follows ``kubeadm init phase``."""
    if not argv or argv[0].startswith("-"):
        out("Use this command to invoke single phase of the init workflow")
        return 0
    name, rest = argv[0], list(argv[1:])
    if name not in PHASES:
        raise KubeadmError(f'unknown command "{name}" for "kubeadm init phase"')
    sub = PHASES[name]
    chosen = ""
    if sub:
        if not rest or rest[0].startswith("-"):
            out(f"Use this command to invoke the {name} phase (a sub-phase is needed, e.g. "
                f"'kubeadm init phase {name} {sub}')")
            return 0
        if rest[0] != sub and rest[0] not in EXTRA_SUBPHASES.get(name, ()):
            raise KubeadmError(f"the stand-in implements only 'kubeadm init phase {name} {sub}', "
                               f"not {rest[0]!r}")
        chosen, rest = rest[0], rest[1:]
    args = parse(phase_parser(name), rest)
    args.subphase = chosen
    check_mixed(rest)
    if args.dry_run:
        raise KubeadmError("the lab's kubeadm stand-in does not support --dry-run")
    cfg = _config(args)
    label = f"{name}/{args.subphase}" if sub else name
    try:
        return PHASE_RUNNERS[name](cfg, args)
    except (ApiError, OSError) as exc:
        raise KubeadmError(str(exc), phase=label) from exc


def _preflight(cfg: Config, args: argparse.Namespace) -> int:
    from .kubeadm_preflight import init_checks, preflight

    preflight(init_checks(cfg), cfg.ignore_preflight | set(getattr(args, "ignore_preflight_errors", [])))
    return 0


def _certs(cfg: Config, args: argparse.Namespace) -> int:
    from .kubeadm_pki import create_pki

    create_pki(cfg)
    return 0


def _kubeconfig(cfg: Config, args: argparse.Namespace) -> int:
    from .kubeadm_files import write_kubeconfigs
    from .pkiutil import Pair

    ca = Pair.from_pem(read_file(f"{KUBERNETES_DIR}/pki/ca.crt"), read_file(f"{KUBERNETES_DIR}/pki/ca.key"))
    write_kubeconfigs(cfg, ca, KUBECONFIGS)
    return 0


def _etcd(cfg: Config, args: argparse.Namespace) -> int:
    from .kubeadm_files import etcd_manifest, write_manifest

    if cfg.external:
        out("[etcd] External etcd mode. Skipping the creation of a manifest for local etcd")
        return 0
    out(f'[etcd] Creating static Pod manifest for local etcd in "{MANIFESTS_DIR}"')
    write_manifest("etcd", etcd_manifest(cfg, f"{cfg.node_name}=https://{cfg.advertise_address}:2380"))
    return 0


def _control_plane(cfg: Config, args: argparse.Namespace) -> int:
    from .kubeadm_files import write_control_plane_manifests

    write_control_plane_manifests(cfg)
    return 0


def _kubelet_start(cfg: Config, args: argparse.Namespace) -> int:
    from .kubeadm_files import write_kubelet_files
    from .kubeadm_init import start_kubelet

    write_kubelet_files(cfg)
    start_kubelet()
    return 0


def _upload_config(cfg: Config, args: argparse.Namespace) -> int:
    from .kubeadm_init import upload_config

    upload_config(_api(str(args.kubeconfig)), cfg)
    return 0


def _upload_certs(cfg: Config, args: argparse.Namespace) -> int:
    from .kubeadm_init import run_upload_certs_phase

    if not getattr(args, "upload_certs", False):
        out("[upload-certs] Skipping phase. Please see --upload-certs")
        return 0
    return run_upload_certs_phase(cfg, str(args.kubeconfig),
                                  bool(getattr(args, "skip_certificate_key_print", False)))


def _mark_control_plane(cfg: Config, args: argparse.Namespace) -> int:
    from .kubeadm_init import mark_control_plane

    mark_control_plane(_api(str(args.kubeconfig)), cfg)
    return 0


def _bootstrap_token(cfg: Config, args: argparse.Namespace) -> int:
    from .kubeadm_init import bootstrap_tokens

    bootstrap_tokens(_api(str(args.kubeconfig)), cfg,
                     print_token=not getattr(args, "skip_token_print", False))
    return 0


def _kubelet_finalize(cfg: Config, args: argparse.Namespace) -> int:
    out(f'[kubelet-finalize] Updating "{KUBERNETES_DIR}/kubelet.conf" to point to a rotatable kubelet '
        "client certificate and key")
    return 0


def _addon(cfg: Config, args: argparse.Namespace) -> int:
    from .kubeadm_addons import apply_addons

    apply_addons(_api(str(args.kubeconfig)), cfg, str(getattr(args, "subphase", "") or "all"))
    return 0


PHASE_RUNNERS: dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "preflight": _preflight, "certs": _certs, "kubeconfig": _kubeconfig, "etcd": _etcd,
    "control-plane": _control_plane, "kubelet-start": _kubelet_start, "upload-config": _upload_config,
    "upload-certs": _upload_certs, "mark-control-plane": _mark_control_plane,
    "bootstrap-token": _bootstrap_token, "kubelet-finalize": _kubelet_finalize, "addon": _addon,
}
