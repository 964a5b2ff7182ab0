"""kubeadm stand-in: ``python3 -m hactl.lab.standins.kubeadm <command> ...`` (see docs/standins/kubeadm.md).

Commands: init (+ ``init phase …``, :mod:`.kubeadm_phase`), join, token
create|list|generate|delete, certs check-expiration|certificate-key, reset, version. Flags are
parsed as strictly as pflag parses them (:mod:`.kubeadm_flags`); errors are printed the way
kubeadm prints them and exit 1.
"""

from __future__ import annotations

import sys

from .binversion import answer_fast

if __name__ == "__main__":  # `kubeadm version` answers before the heavy imports below
    answer_fast("kubeadm", sys.argv[1:])

import argparse
from typing import Any

from .kubeadm_api import Api, ApiError, ns_path
from .kubeadm_common import (
    DEFAULT_TOKEN_TTL,
    KubeadmError,
    duration_seconds,
    knob_seconds,
    out,
    warn,
)
from .kubeadm_config import Config, finish, from_documents, load_documents
from .kubeadm_flags import Parser, check_mixed, parse

#: kubeadm flag (argparse dest) → the Config field it sets when given.
FLAG_FIELDS = {
    "control_plane_endpoint": "control_plane_endpoint",
    "pod_network_cidr": "pod_subnet",
    "service_cidr": "service_subnet",
    "service_dns_domain": "dns_domain",
    "kubernetes_version": "kubernetes_version",
    "image_repository": "image_repository",
    "apiserver_advertise_address": "advertise_address",
    "apiserver_bind_port": "bind_port",
    "node_name": "node_name",
    "certificate_key": "certificate_key",
    "cri_socket": "cri_socket",
}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--v", "-v", default="0")
    p.add_argument("--config", default="")
    p.add_argument("--ignore-preflight-errors", action="append", default=[])
    p.add_argument("--skip-phases", action="append", default=[])
    p.add_argument("--node-name", default="")
    p.add_argument("--apiserver-advertise-address", default="")
    p.add_argument("--apiserver-bind-port", type=int, default=0)
    p.add_argument("--certificate-key", default="")
    p.add_argument("--cri-socket", default="")
    p.add_argument("--dry-run", action="store_true")


def build_parser() -> Parser:
    root = Parser(prog="kubeadm", add_help=True)
    sub = root.add_subparsers(dest="command", parser_class=Parser)
    init = sub.add_parser("init")
    _common(init)
    for flag in ("--control-plane-endpoint", "--pod-network-cidr", "--service-cidr", "--service-dns-domain",
                 "--kubernetes-version", "--token", "--token-ttl", "--apiserver-cert-extra-sans",
                 "--image-repository"):
        init.add_argument(flag, default=None)
    init.add_argument("--upload-certs", action="store_true")
    init.add_argument("--skip-token-print", action="store_true")
    init.add_argument("--skip-certificate-key-print", action="store_true")
    init.add_argument("--kubeconfig", default="/etc/kubernetes/admin.conf")
    init.add_argument("rest", nargs="*")
    join = sub.add_parser("join")
    _common(join)
    join.add_argument("endpoint", nargs="?", default="")
    for flag in ("--token", "--discovery-token", "--tls-bootstrap-token"):
        join.add_argument(flag, default="")
    join.add_argument("--discovery-token-ca-cert-hash", action="append", default=[])
    join.add_argument("--discovery-token-unsafe-skip-ca-verification", action="store_true")
    join.add_argument("--control-plane", action="store_true")
    token = sub.add_parser("token")
    token.add_argument("action", choices=["create", "list", "generate", "delete"])
    token.add_argument("token", nargs="*")
    token.add_argument("--kubeconfig", default="/etc/kubernetes/admin.conf")
    token.add_argument("--ttl", default=None)
    token.add_argument("--print-join-command", action="store_true")
    token.add_argument("--certificate-key", default="")
    token.add_argument("--description", default="")
    token.add_argument("--usages", default="signing,authentication")
    token.add_argument("--groups", default="system:bootstrappers:kubeadm:default-node-token")
    token.add_argument("--config", default="")
    token.add_argument("--v", "-v", default="0")
    token.add_argument("--dry-run", action="store_true")
    certs = sub.add_parser("certs")
    certs.add_argument("action", choices=["check-expiration", "certificate-key"])
    certs.add_argument("--config", default="")
    certs.add_argument("--kubeconfig", default="/etc/kubernetes/admin.conf")
    certs.add_argument("--v", "-v", default="0")
    reset = sub.add_parser("reset")
    reset.add_argument("--force", "-f", action="store_true")
    reset.add_argument("--v", "-v", default="0")
    reset.add_argument("--cri-socket", default="")
    reset.add_argument("--ignore-preflight-errors", action="append", default=[])
    reset.add_argument("--cleanup-tmp-dir", action="store_true")
    reset.add_argument("--skip-phases", action="append", default=[])
    reset.add_argument("--kubeconfig", default="/etc/kubernetes/admin.conf")
    reset.add_argument("--cert-dir", default="/etc/kubernetes/pki")
    version = sub.add_parser("version")
    version.add_argument("--output", "-o", default="")
    return root


def build_config(args: argparse.Namespace, argv: list[str]) -> Config:
    cfg = Config()
    check_mixed(argv[1:])
    if args.config:
        from_documents(cfg, load_documents(args.config))
    def get(name: str) -> Any:
        return getattr(args, name, None)

    for flag, attr in FLAG_FIELDS.items():
        if get(flag):
            setattr(cfg, attr, get(flag))
    if get("apiserver_cert_extra_sans"):
        cfg.cert_sans += [s for s in get("apiserver_cert_extra_sans").split(",") if s]
    if get("upload_certs"):
        cfg.upload_certs = True
    for value in get("ignore_preflight_errors") or []:
        cfg.ignore_preflight |= {v.strip() for v in value.split(",") if v.strip()}
    for value in get("skip_phases") or []:
        cfg.skip_phases += [v.strip() for v in value.split(",") if v.strip()]
    ttl_default = knob_seconds("kubeadm", "tokenTTLSeconds", DEFAULT_TOKEN_TTL)
    if args.command == "init":
        if get("token") or get("token_ttl"):
            cfg.tokens = cfg.tokens or [{}]
            if get("token"):
                cfg.tokens[0]["token"] = get("token")
            if get("token_ttl"):
                cfg.tokens[0]["ttl"] = duration_seconds(get("token_ttl"), ttl_default)
        for token in cfg.tokens or []:
            token["ttl"] = duration_seconds(token.get("ttl"), ttl_default)
        if not cfg.tokens:
            cfg.tokens = [{"ttl": ttl_default}]
    if args.command == "join":
        cfg.discovery_endpoint = args.endpoint or cfg.discovery_endpoint
        cfg.discovery_token = args.discovery_token or args.token or cfg.discovery_token
        cfg.tls_bootstrap_token = args.tls_bootstrap_token or args.token or cfg.tls_bootstrap_token
        cfg.ca_cert_hashes += args.discovery_token_ca_cert_hash
        cfg.unsafe_skip_ca = cfg.unsafe_skip_ca or args.discovery_token_unsafe_skip_ca_verification
        cfg.control_plane = cfg.control_plane or args.control_plane
        if not cfg.discovery_endpoint or not cfg.discovery_token:
            raise KubeadmError("discovery: Invalid value: \"\": bootstrapToken or file must be set")
    return finish(cfg)


def cmd_token(args: argparse.Namespace) -> int:
    from .kubeadm_init import print_join_command
    from .kubeadm_token import create_token_secret, generate_token, parse_token, token_list

    if args.action == "generate":
        out(generate_token())
        return 0
    api = Api.from_kubeconfig(args.kubeconfig, retry_seconds=30)
    if args.action == "list":
        out(token_list(api))
        return 0
    if args.action == "delete":
        for token in args.token:
            token_id = token.split(".")[0]
            api.delete(ns_path("kube-system", "secrets", f"bootstrap-token-{token_id}"))
            out(f'bootstrap token "{token_id}" deleted')
        return 0
    token = args.token[0] if args.token else generate_token()
    parse_token(token)
    ttl = duration_seconds(args.ttl, knob_seconds("kubeadm", "tokenTTLSeconds", DEFAULT_TOKEN_TTL))
    create_token_secret(api, token, ttl, usages=[u for u in args.usages.split(",") if u],
                        groups=[g for g in args.groups.split(",") if g], description=args.description)
    if args.print_join_command:
        out(print_join_command(api, token, args.certificate_key, api.server))
    else:
        out(token)
    return 0


def dispatch(argv: list[str]) -> int:
    if argv[:2] == ["init", "phase"]:
        from .kubeadm_phase import run_phase
        return run_phase(argv[2:])
    args = parse(build_parser(), argv)
    if args.command is None:
        build_parser().print_help()
        return 0
    if args.command == "version":
        from .kubeadm_info import run_version
        return run_version(args.output)
    if args.command == "token":
        if args.action == "create":
            check_mixed(argv[2:])  # as kubeadm's token create does
        return cmd_token(args)
    if args.command == "certs":
        if args.action == "certificate-key":
            from .kubeadm_certs import generate_certificate_key
            out(generate_certificate_key())
            return 0
        from .kubeadm_info import run_check_expiration
        return run_check_expiration()
    if args.command == "reset":
        from .kubeadm_reset import run_reset
        return run_reset(args.force, [p.strip() for v in args.skip_phases for p in v.split(",")
                                      if p.strip()])
    check_mixed(argv[1:])  # before anything else, as kubeadm's newInitData/newJoinData do
    if getattr(args, "dry_run", False):
        raise KubeadmError("the lab's kubeadm stand-in does not support --dry-run")
    cfg = build_config(args, argv)
    if args.command == "init":
        from .kubeadm_init import run_init
        return run_init(cfg)
    from .kubeadm_join import run_join
    return run_join(cfg)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return dispatch(argv)
    except KubeadmError as exc:  # UsageError too: no phase, exit 1
        warn(exc.render())
        return exc.code
    except ApiError as exc:
        warn(f"{exc}\nTo see the stack trace of this error execute with --v=5 or higher")
        return 1
    except OSError as exc:
        warn(f"{exc}\nTo see the stack trace of this error execute with --v=5 or higher")
        return 1


if __name__ == "__main__":
    sys.exit(main())
