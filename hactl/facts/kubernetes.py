"""kubeadm/kubelet on masters and workers: /etc/kubernetes files, kubelet, certificate expiry,
and, from a master with ``admin.conf``, what its API server says (read with the real kubectl).

kubectl runs with ``--kubeconfig /etc/kubernetes/admin.conf``, a short ``--request-timeout`` and
``--cache-dir`` pointed below ``/dev/null`` so its discovery cache is never written. Secrets are
read through ``-o jsonpath`` naming only metadata, ``type`` and the token's ``expiration`` and
``usage-*`` keys: a bootstrap token's secret part never leaves the host.
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml

from hactl.facts.base import Fact, FactParseError, multi_values, sh
from hactl.facts.model import BootstrapToken, ClusterView, KubernetesFacts, NodeInfo
from hactl.facts.services import UnitState

K8S_DIR = "/etc/kubernetes"
ADMIN_CONF = f"{K8S_DIR}/admin.conf"
KUBELET_CONF = f"{K8S_DIR}/kubelet.conf"
MANIFESTS = f"{K8S_DIR}/manifests"
PKI = f"{K8S_DIR}/pki"
REQUEST_TIMEOUT = "5s"
NO_CACHE = "/dev/null/hactl-no-cache"
"""A cache dir that cannot be created: kubectl then writes no discovery cache."""

_FILES = rf"""if [ -f {ADMIN_CONF} ]; then echo admin_conf=1; fi
if [ -f {KUBELET_CONF} ]; then echo kubelet_conf=1; fi
for f in {MANIFESTS}/*; do if [ -f "$f" ]; then echo "manifest=${{f##*/}}"; fi; done
for f in {PKI}/* {PKI}/*/*; do if [ -f "$f" ]; then echo "pki=${{f#{PKI}/}}"; fi; done
:"""

_CERTS = rf"""if [ ! -d {PKI} ]; then echo "no {PKI}" >&2; return 100; fi
if command -v python3 >/dev/null 2>&1; then
  python3 -B -c 'import glob,ssl
for p in sorted(glob.glob("{PKI}/**/*.crt", recursive=True)):
    try:
        print(p + "\tnotAfter=" + ssl._ssl._test_decode_cert(p)["notAfter"])
    except Exception as exc:
        print(p + "\terror=" + str(exc).replace("\n", " "))'
else
  for f in {PKI}/*.crt {PKI}/*/*.crt; do
    if [ -f "$f" ]; then printf '%s\t%s\n' "$f" "$(openssl x509 -in "$f" -noout -enddate 2>/dev/null)"; fi
  done
fi"""
"""One python3 process reads every certificate (a fork per file is slow on a busy host);
without python3, ``openssl x509 -enddate`` per file."""


@dataclass(frozen=True)
class K8sFileInfo:
    admin_conf: bool
    kubelet_conf: bool
    manifests: tuple[str, ...]
    pki_files: tuple[str, ...]


@dataclass(frozen=True)
class K8sFiles(Fact[K8sFileInfo]):
    section = "k8s.files"

    def script(self) -> str:
        return _FILES

    def parse(self, stdout: str) -> K8sFileInfo:
        values = multi_values(stdout, ("admin_conf", "kubelet_conf", "manifest", "pki"))
        return K8sFileInfo(
            admin_conf=bool(values["admin_conf"]),
            kubelet_conf=bool(values["kubelet_conf"]),
            manifests=tuple(sorted(values["manifest"])),
            pki_files=tuple(sorted(values["pki"])),
        )


def parse_cert_time(text: str) -> datetime:
    """``Nov 26 22:41:13 2027 GMT`` (openssl / ssl's notAfter) → aware UTC datetime."""
    try:
        return datetime.fromtimestamp(ssl.cert_time_to_seconds(text.strip()), UTC)
    except ValueError as exc:
        raise FactParseError(f"not a certificate time: {text!r}") from exc


@dataclass(frozen=True)
class CertExpiry(Fact[dict[str, datetime]]):
    section = "k8s.certs"

    def script(self) -> str:
        return _CERTS

    def parse(self, stdout: str) -> dict[str, datetime]:
        out: dict[str, datetime] = {}
        for line in stdout.splitlines():
            path, _, rest = line.partition("\t")
            _, found, when = rest.partition("notAfter=")
            if path and found:
                out[path] = parse_cert_time(when)
        return out


def kubectl(*args: str) -> str:
    """A guarded kubectl command line: skipped (100) where there is no admin.conf or kubectl."""
    argv = (
        "kubectl",
        f"--kubeconfig={ADMIN_CONF}",
        f"--request-timeout={REQUEST_TIMEOUT}",
        f"--cache-dir={NO_CACHE}",
        *args,
    )
    return (
        f'if [ ! -f {ADMIN_CONF} ]; then echo "no {ADMIN_CONF}" >&2; return 100; fi\n'
        'if ! command -v kubectl >/dev/null 2>&1; then echo "kubectl is not installed" >&2; return 100; fi\n'
        f"{sh(argv)}"
    )


def parse_time(text: str | None) -> datetime | None:
    """RFC 3339 (``2026-11-26T22:00:00Z``) → aware datetime; None for empty."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise FactParseError(f"not an RFC 3339 time: {text!r}") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Nodes(Fact[tuple[NodeInfo, ...]]):
    section = "k8s.nodes"

    def script(self) -> str:
        return kubectl("get", "nodes", "-o", "json")

    def parse(self, stdout: str) -> tuple[NodeInfo, ...]:
        try:
            data = json.loads(stdout)
        except ValueError as exc:
            raise FactParseError(f"not JSON: {stdout[:200]!r}") from exc
        nodes = []
        for item in data.get("items", []):
            meta = item.get("metadata", {})
            status = item.get("status", {})
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions", [])
            )
            nodes.append(
                NodeInfo(
                    name=meta["name"],
                    ready=ready,
                    labels=dict(meta.get("labels", {})),
                    kubelet_version=status.get("nodeInfo", {}).get("kubeletVersion"),
                )
            )
        return tuple(sorted(nodes, key=lambda n: n.name))


_SECRET_FIELDS = (
    "{.metadata.name}",
    "{.type}",
    "{.metadata.creationTimestamp}",
    "{.data.expiration}",
    "{.data.usage-bootstrap-authentication}",
    "{.data.usage-bootstrap-signing}",
)
SECRETS_JSONPATH = "{range .items[*]}" + '{"\\t"}'.join(_SECRET_FIELDS) + '{"\\n"}{end}'


@dataclass(frozen=True)
class KubeSystemSecrets:
    kubeadm_certs_created: datetime | None
    tokens: tuple[BootstrapToken, ...]


def _b64(text: str) -> str:
    try:
        return base64.b64decode(text, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise FactParseError(f"not base64: {text[:40]!r}") from exc


@dataclass(frozen=True)
class Secrets(Fact[KubeSystemSecrets]):
    """kube-system Secrets, metadata only: ``kubeadm-certs`` age and bootstrap token TTLs."""

    section = "k8s.secrets"

    def script(self) -> str:
        return kubectl("-n", "kube-system", "get", "secrets", "-o", f"jsonpath={SECRETS_JSONPATH}")

    def parse(self, stdout: str) -> KubeSystemSecrets:
        certs: datetime | None = None
        tokens = []
        for line in stdout.splitlines():
            fields = (line.split("\t") + [""] * 6)[:6]
            name, kind, created, expiration, auth, signing = fields
            if name == "kubeadm-certs":
                certs = parse_time(created)
            elif kind == "bootstrap.kubernetes.io/token" and name.startswith("bootstrap-token-"):
                usages = tuple(
                    usage
                    for usage, flag in (("authentication", auth), ("signing", signing))
                    if flag and _b64(flag) == "true"
                )
                tokens.append(
                    BootstrapToken(
                        token_id=name.removeprefix("bootstrap-token-"),
                        expiration=parse_time(_b64(expiration)) if expiration else None,
                        usages=usages,
                    )
                )
        return KubeSystemSecrets(certs, tuple(sorted(tokens, key=lambda t: t.token_id)))


@dataclass(frozen=True)
class KubeadmClusterConfig:
    control_plane_endpoint: str | None
    etcd_endpoints: tuple[str, ...]
    kubernetes_version: str | None


@dataclass(frozen=True)
class KubeadmConfig(Fact[KubeadmClusterConfig | None]):
    """``ClusterConfiguration`` from kube-system/kubeadm-config (None when there is none)."""

    section = "k8s.config"

    def script(self) -> str:
        return kubectl(
            "-n",
            "kube-system",
            "get",
            "configmap",
            "kubeadm-config",
            "--ignore-not-found",
            "-o",
            "jsonpath={.data.ClusterConfiguration}",
        )

    def parse(self, stdout: str) -> KubeadmClusterConfig | None:
        if not stdout.strip():
            return None
        try:
            data: Any = yaml.safe_load(stdout)
        except yaml.YAMLError as exc:
            raise FactParseError(f"ClusterConfiguration is not YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise FactParseError("ClusterConfiguration is not a mapping")
        external = (data.get("etcd") or {}).get("external") or {}
        return KubeadmClusterConfig(
            control_plane_endpoint=data.get("controlPlaneEndpoint"),
            etcd_endpoints=tuple(external.get("endpoints") or ()),
            kubernetes_version=data.get("kubernetesVersion"),
        )


def assemble(
    *,
    files: K8sFileInfo,
    kubelet: UnitState | None,
    certs: dict[str, datetime] | None,
    nodes: tuple[NodeInfo, ...] | None,
    secrets: KubeSystemSecrets | None,
    config: KubeadmClusterConfig | None,
    api_errors: dict[str, str],
    asked_api: bool,
) -> KubernetesFacts:
    cluster = None
    if asked_api:
        cluster = ClusterView(
            nodes=nodes or (),
            kubeadm_certs_created=secrets.kubeadm_certs_created if secrets else None,
            bootstrap_tokens=secrets.tokens if secrets else (),
            control_plane_endpoint=config.control_plane_endpoint if config else None,
            etcd_endpoints=config.etcd_endpoints if config else (),
            kubernetes_version=config.kubernetes_version if config else None,
            errors=api_errors,
        )
    return KubernetesFacts(
        admin_conf=files.admin_conf,
        kubelet_conf=files.kubelet_conf,
        manifests=files.manifests,
        pki_files=files.pki_files,
        kubelet_active=kubelet.active if kubelet else False,
        kubelet_enabled=kubelet.enabled if kubelet else False,
        cert_expiry=certs or {},
        cluster=cluster,
    )
