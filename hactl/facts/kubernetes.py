"""kubeadm/kubelet on masters and workers: /etc/kubernetes files, kubelet, certificate expiry,
and, from a master with ``admin.conf``, what the API says (read with the real kubectl).

The API is asked once per probe, not once per master: every master's admin.conf points at the
control-plane endpoint, so their answers are the same cluster's (:mod:`hactl.probe` picks the
master, and asks the next ones only when it cannot answer). Nodes, Secrets and kubeadm-config
come from ONE kubectl call (:class:`ApiState`). kubectl runs with ``--kubeconfig
/etc/kubernetes/admin.conf``, a short ``--request-timeout`` and ``--cache-dir`` pointed below
``/dev/null`` so its discovery cache is never written. Secrets are
read through ``-o jsonpath`` naming only metadata, ``type`` and the token's ``expiration`` and
``usage-*`` keys: a bootstrap token's secret part never leaves the host.

``k8s.certs`` sends back the certificates under /etc/kubernetes/pki and the kubelet's client
certificate (only the certificate blocks: that file holds the private key too, which never
leaves the host); they are read here: notAfter, notBefore and the subjectAltName (the API
server's names). Each Node's InternalIP addresses come with the API's Node list.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml

from hactl.facts.base import Fact, FactParseError, multi_values, sh
from hactl.facts.model import (
    BootstrapToken,
    CertDates,
    ClusterView,
    EtcdMember,
    KubernetesFacts,
    NodeInfo,
    ServingNames,
)
from hactl.facts.services import UnitState
from hactl.hostlayout import ADMIN_CONF as ADMIN_CONF
from hactl.hostlayout import APISERVER_CERT as APISERVER_CERT
from hactl.hostlayout import APISERVER_MANIFEST, ETCD_MANIFEST
from hactl.hostlayout import K8S_DIR as K8S_DIR
from hactl.hostlayout import K8S_MANIFESTS as MANIFESTS
from hactl.hostlayout import K8S_PKI as PKI
from hactl.hostlayout import KUBELET_CLIENT_CERT as KUBELET_CLIENT_CERT
from hactl.hostlayout import KUBELET_CONF as KUBELET_CONF
from hactl.hostlayout import KUBELET_CONFIG as KUBELET_CONFIG
from hactl.render.cni import KINDS as NETWORK_KINDS
from hactl.render.cni import MANAGED_BY
from hactl.transport import tools
from hactl.transport.base import Argv

"""The API server's serving certificate (kubeadm's ``certs apiserver`` phase); not in
:mod:`hactl.hostlayout` yet."""
CERT_FILE_MARK = "#hactl-file "
"""Starts each certificate file's block in the ``k8s.certs`` output (then the path, then PEM)."""

_FILES = rf"""if [ -f {ADMIN_CONF} ]; then echo admin_conf=1; fi
if [ -f {KUBELET_CONF} ]; then echo kubelet_conf=1; fi
if [ -f {KUBELET_CONFIG} ]; then
  echo kubelet_config=1
  sed -n 's/^rotateCertificates:/rotate=/p' {KUBELET_CONFIG} | head -n 1
fi
for f in {K8S_DIR}/*.conf; do if [ -f "$f" ]; then echo "conf=${{f##*/}}"; fi; done
for f in {MANIFESTS}/*; do if [ -f "$f" ]; then echo "manifest=${{f##*/}}"; fi; done
for f in {PKI}/* {PKI}/*/*; do if [ -f "$f" ]; then echo "pki=${{f#{PKI}/}}"; fi; done
if [ -f {APISERVER_MANIFEST} ]; then
  grep -o -e '--etcd-servers=[^[:space:]]*' {APISERVER_MANIFEST} | head -n 1 | sed 's/^--/flag=/' || :
fi
:"""

_CERTS = rf"""if [ ! -d {PKI} ] && [ ! -f {KUBELET_CLIENT_CERT} ]; then echo "no {PKI}" >&2; return 100; fi
set --
for f in {PKI}/*.crt {PKI}/*/*.crt {KUBELET_CLIENT_CERT}; do if [ -f "$f" ]; then set -- "$@" "$f"; fi; done
if [ $# -eq 0 ]; then return 0; fi
awk 'FNR == 1 {{ print "{CERT_FILE_MARK}" FILENAME; c = 0 }} /^-----BEGIN CERTIFICATE-----/ {{ c = 1 }} c {{ print }} /^-----END CERTIFICATE-----/ {{ c = 0 }}' "$@"
"""
"""The certificates themselves (public data) come back in ONE awk process and are read here
(:func:`parse_cert_pems`): no interpreter or per-file openssl runs on the host. Only the
``CERTIFICATE`` blocks are printed: the kubelet's client certificate file
(/var/lib/kubelet/pki/kubelet-client-current.pem, a symlink awk follows) holds its private key
too, which never leaves the host."""


@dataclass(frozen=True)
class K8sFileInfo:
    admin_conf: bool
    kubelet_conf: bool
    manifests: tuple[str, ...]
    pki_files: tuple[str, ...]
    kubeconfigs: tuple[str, ...] = ()
    """``/etc/kubernetes/*.conf`` names (what kubeadm's kubeconfig phase wrote)."""
    kubelet_config: bool = False
    """/var/lib/kubelet/config.yaml (kubeadm's kubelet-start phase)."""
    etcd_servers: tuple[str, ...] | None = None
    """``--etcd-servers`` of kube-apiserver.yaml (None: no manifest, or no such flag)."""
    rotates_certificates: bool | None = None
    """``rotateCertificates`` of /var/lib/kubelet/config.yaml (see :func:`rotate_flag`)."""


MAX_ETCD_SERVERS = 64
"""More URLs than this in ``--etcd-servers`` are not read (the flag is then taken as unread)."""


def etcd_servers_flag(values: list[str]) -> tuple[str, ...] | None:
    """``etcd-servers=https://a:2379,https://b:2379`` (the first ``flag=`` line; quotes a YAML
    writer may have put around the argument, and a JSON list's comma, are dropped) → the URLs; None when absent, empty,
    longer than 8 KiB or holding more than :data:`MAX_ETCD_SERVERS` URLs."""
    for value in values:
        name, _, urls = value.partition("=")
        if name != "etcd-servers":
            continue
        urls = urls.strip().strip("'\",").strip()  # also a JSON-style ``"--flag=…",``
        found = tuple(u.strip() for u in urls.split(",") if u.strip())
        if not found or len(urls) > 8192 or len(found) > MAX_ETCD_SERVERS:
            return None
        return found
    return None


@dataclass(frozen=True)
class K8sFiles(Fact[K8sFileInfo]):
    section = "k8s.files"

    def script(self) -> str:
        return _FILES

    def parse(self, stdout: str) -> K8sFileInfo:
        values = multi_values(
            stdout, ("admin_conf", "kubelet_conf", "manifest", "pki", "conf", "kubelet_config", "flag",
                     "rotate")
        )
        kubelet_config = bool(values["kubelet_config"])
        return K8sFileInfo(
            admin_conf=bool(values["admin_conf"]),
            kubelet_conf=bool(values["kubelet_conf"]),
            manifests=tuple(sorted(values["manifest"])),
            pki_files=tuple(sorted(values["pki"])),
            kubeconfigs=tuple(sorted(values["conf"])),
            kubelet_config=kubelet_config,
            etcd_servers=etcd_servers_flag(values["flag"]),
            rotates_certificates=rotate_flag(values["rotate"]) if kubelet_config else None,
        )


def rotate_flag(values: list[str]) -> bool | None:
    """``rotateCertificates:`` of the kubelet's config.yaml (the first line's value, a comment
    and quotes dropped) → True/False; no such line → False (KubeletConfiguration's default);
    a value that is not a YAML boolean → None (not known)."""
    if not values:
        return False
    text = values[0].partition("#")[0].strip().strip("'\"").strip().lower()
    return {"true": True, "false": False}.get(text)


MAX_SANS = 256
"""More subjectAltName entries than this are not kept (kubeadm writes about ten)."""


@dataclass(frozen=True, eq=False)
class CertReadings(Mapping[str, datetime]):
    """What ``k8s.certs`` read: path → notAfter (a mapping, equal to a dict of the same items),
    and per path the notBefore and the subjectAltName."""

    ends: Mapping[str, datetime]
    starts: Mapping[str, datetime]
    names: Mapping[str, ServingNames]

    def __getitem__(self, path: str) -> datetime:
        return self.ends[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self.ends)

    def __len__(self) -> int:
        return len(self.ends)

    def dates(self, path: str) -> CertDates | None:
        """The validity of the certificate at ``path`` (None: not read)."""
        end = self.ends.get(path)
        return None if end is None else CertDates(not_after=end, not_before=self.starts.get(path))


def serving_names(cert: Any) -> ServingNames | None:
    """A certificate's subjectAltName → DNS names and IP addresses (Python's normal form:
    ``fd00::10``); other kinds (email, URI, a network) are left out; at most :data:`MAX_SANS`.
    No extension: no names; extensions that do not read: None (not known)."""
    from cryptography import x509  # imported here: planning (refusals_identity) imports this module

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = [str(d) for d in san.get_values_for_type(x509.DNSName)]
        ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)
               if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address)]
    except x509.ExtensionNotFound:
        return ServingNames()
    except (x509.DuplicateExtension, ValueError):
        return None
    return ServingNames(tuple(dict.fromkeys(dns))[:MAX_SANS], tuple(dict.fromkeys(ips))[:MAX_SANS])


def parse_cert_pems(stdout: str) -> CertReadings:
    """``#hactl-file PATH`` + PEM text, repeated → per path its first certificate's notAfter,
    notBefore and subjectAltName. A file without a readable certificate is left out (it has no
    expiry to watch)."""
    from cryptography import x509  # imported here: planning (refusals_identity) imports this module

    ends: dict[str, datetime] = {}
    starts: dict[str, datetime] = {}
    names: dict[str, ServingNames] = {}
    for chunk in stdout.split(CERT_FILE_MARK)[1:]:
        path, _, pem = chunk.partition("\n")
        try:
            cert = x509.load_pem_x509_certificate(pem.encode())
            ends[path], starts[path] = cert.not_valid_after_utc, cert.not_valid_before_utc
        except ValueError:
            continue
        if (sans := serving_names(cert)) is not None:
            names[path] = sans
    return CertReadings(ends, starts, names)


@dataclass(frozen=True)
class CertExpiry(Fact[CertReadings]):
    section = "k8s.certs"

    def script(self) -> str:
        return _CERTS

    def parse(self, stdout: str) -> CertReadings:
        return parse_cert_pems(stdout)


def kubectl(*args: str) -> str:
    """A guarded kubectl command line (:func:`hactl.transport.tools.kubectl` with the probe's
    short request timeout): skipped (100) where there is no admin.conf or kubectl."""
    return (
        f'if [ ! -f {ADMIN_CONF} ]; then echo "no {ADMIN_CONF}" >&2; return 100; fi\n'
        'if ! command -v kubectl >/dev/null 2>&1; then echo "kubectl is not installed" >&2; return 100; fi\n'
        f"{sh(tools.kubectl(*args, timeout=tools.KUBECTL_READ_TIMEOUT))}"
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


def _jp_fields(*fields: str) -> str:
    return '{"\\t"}'.join(fields) + '{"\\n"}'


API_JSONPATH = (
    '{range .items[?(@.kind=="Node")]}'
    + _jp_fields(
        "node",
        "{.metadata.name}",
        '{.status.conditions[?(@.type=="Ready")].status}',
        "{.status.nodeInfo.kubeletVersion}",
        "{.metadata.labels}",
        '{.status.addresses[?(@.type=="InternalIP")].address}',
        '{.status.conditions[?(@.type=="Ready")].reason}',
        '{.status.conditions[?(@.type=="Ready")].message}',
    )
    + "{end}"
    + '{range .items[?(@.kind=="Secret")]}'
    + _jp_fields(
        "secret",
        "{.metadata.name}",
        "{.type}",
        "{.metadata.creationTimestamp}",
        "{.data.expiration}",
        "{.data.usage-bootstrap-authentication}",
        "{.data.usage-bootstrap-signing}",
    )
    + "{end}"
    + '{range .items[?(@.metadata.name=="kubeadm-config")]}'
    + _jp_fields("config", "{.kind}", "{.data}")
    + "{end}"
    + '{"configmaps"}{range .items[?(@.kind=="ConfigMap")]}{"\\t"}{.metadata.name}{end}{"\\n"}'
)
"""One line per Node (name, Ready, kubelet version, labels as JSON, its InternalIP addresses
separated by spaces), per kube-system Secret
(metadata, ``type``, and only the bootstrap token's ``expiration`` and ``usage-*`` keys: its
secret part is never printed), for kube-system/kubeadm-config (its ``data`` as one JSON
line) and one ``configmaps`` line with the names of the kube-system ConfigMaps."""
PUBLIC_JSONPATH = '{"public"}{range .items[*]}{"\\t"}{.metadata.name}{end}{"\\n"}'
"""One ``public`` line with the names of the kube-public ConfigMaps (``cluster-info``: the
last object ``kubeadm init`` makes that joins read)."""


@dataclass(frozen=True)
class KubeSystemSecrets:
    kubeadm_certs_created: datetime | None
    tokens: tuple[BootstrapToken, ...]


@dataclass(frozen=True)
class KubeadmClusterConfig:
    control_plane_endpoint: str | None
    etcd_endpoints: tuple[str, ...]
    kubernetes_version: str | None
    pod_subnet: str | None = None
    """``networking.podSubnet`` (None: not set, e.g. a cluster initialised without one)."""
    service_subnet: str | None = None
    """``networking.serviceSubnet``."""
    dns_domain: str | None = None
    """``networking.dnsDomain``."""


@dataclass(frozen=True)
class ApiAnswer:
    nodes: tuple[NodeInfo, ...]
    secrets: KubeSystemSecrets
    config: KubeadmClusterConfig | None
    configmaps: tuple[str, ...] | None = None
    """kube-system ConfigMap names (None: the output had no ``configmaps`` line)."""
    public_configmaps: tuple[str, ...] | None = None
    """kube-public ConfigMap names (None: the output had no ``public`` line)."""
    stacked_etcd: StackedEtcd | None = None
    """Stacked etcd's member list and health (only when asked)."""
    network: Mapping[str, Any] | None = None
    """The pod network's live objects (see :func:`network_objects`); None: not read."""
    not_ready: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """NotReady Node → its Ready condition's ``reason: message``."""


def _b64(text: str) -> str:
    try:
        return base64.b64decode(text, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise FactParseError(f"not base64: {text[:40]!r}") from exc


MAX_NODE_IPS = 8
"""More InternalIP addresses than this on one Node are not read (a dual-stack Node has two)."""


def _node(fields: list[str]) -> NodeInfo:
    name, ready, version, labels, ips = (fields + [""] * 5)[:5]
    try:
        label_map = json.loads(labels) if labels else {}
    except ValueError as exc:
        raise FactParseError(f"node {name}: labels are not JSON: {labels[:80]!r}") from exc
    return NodeInfo(
        name=name, ready=ready == "True", labels=dict(label_map), kubelet_version=version or None,
        internal_ips=tuple(ips.split()[:MAX_NODE_IPS]),
    )


def _token(name: str, expiration: str, auth: str, signing: str) -> BootstrapToken:
    usages = tuple(
        usage
        for usage, flag in (("authentication", auth), ("signing", signing))
        if flag and _b64(flag) == "true"
    )
    return BootstrapToken(
        token_id=name.removeprefix("bootstrap-token-"),
        expiration=parse_time(_b64(expiration)) if expiration else None,
        usages=usages,
    )


def cluster_config(text: str) -> KubeadmClusterConfig:
    """``ClusterConfiguration`` YAML → the fields hactl compares."""
    if text.count("[") + text.count("{") > 256:  # PyYAML is quadratic in flow nesting
        raise FactParseError("ClusterConfiguration has more than 256 brackets: not read")
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FactParseError(f"ClusterConfiguration is not YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise FactParseError("ClusterConfiguration is not a mapping")
    external = (data.get("etcd") or {}).get("external") or {}
    networking = data.get("networking")
    if not isinstance(networking, dict):
        networking = {}  # tolerant: no (or an odd) networking stanza compares nothing
    return KubeadmClusterConfig(
        control_plane_endpoint=data.get("controlPlaneEndpoint"),
        etcd_endpoints=tuple(external.get("endpoints") or ()),
        kubernetes_version=data.get("kubernetesVersion"),
        pod_subnet=_scalar(networking.get("podSubnet")),
        service_subnet=_scalar(networking.get("serviceSubnet")),
        dns_domain=_scalar(networking.get("dnsDomain")),
    )


MAX_SCALAR = 256
"""Longest ``networking.*`` value kept (a CIDR list or a DNS name is far shorter)."""


def _scalar(value: Any) -> str | None:
    """A ``networking.*`` value as text; None when absent, empty, not a scalar or too long
    (tolerant: a value hactl cannot read is not compared rather than failing the probe)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    text = str(value).strip()
    return text if text and len(text) <= MAX_SCALAR else None


def network_get() -> Argv:
    """Every object of the pod network's kinds that hactl applied (its ``managed-by`` label),
    in every namespace, as JSON."""
    kinds = ",".join(resource for resource, _ in NETWORK_KINDS.values())
    return tools.kubectl("get", kinds, "--all-namespaces", "-l", f"{MANAGED_BY}=hactl",
                         "-o", "json", timeout=tools.KUBECTL_READ_TIMEOUT)


NETWORK_LINE = "printf 'network\\t%s\\n' \"$({get} 2>/dev/null | tr -d '\\n\\t')\";"
"""The list on one line (kubectl's JSON escapes the newlines of its strings; the ones between
its tokens, and tabs, go); an empty line when kubectl failed."""
NETWORK_DROP = ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation",
                "selfLink")
"""Metadata the server writes: not compared (nor fingerprinted)."""
MAX_NETWORK_OBJECTS = 256


def network_objects(text: str) -> dict[str, Any] | None:
    """kubectl's List → ``Kind/namespace/name`` (``Kind/name`` cluster-wide) → the object
    without its status and server-written metadata; None when it does not read as a List."""
    text = text.strip()
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return None
    out: dict[str, Any] = {}
    for item in items[:MAX_NETWORK_OBJECTS]:
        if not isinstance(item, dict) or not isinstance(item.get("metadata"), dict):
            continue
        meta = {k: v for k, v in item["metadata"].items() if k not in NETWORK_DROP}
        body = {k: v for k, v in item.items() if k != "status"}
        body["metadata"] = meta
        key = "/".join(p for p in (item.get("kind"), meta.get("namespace"), meta.get("name")) if p)
        out[key] = body
    return out


@dataclass(frozen=True)
class ApiState(Fact[ApiAnswer]):
    """Nodes, kube-system Secrets (metadata only) and kubeadm-config in one kubectl call, then
    kube-public's ConfigMap names and hactl's pod network objects (two more, only when it answered)."""

    section = "k8s.api"
    stacked: bool = False
    """Stacked etcd: also kubeadm's etcd member list and each member's health, through the
    member on this master (lines ``etcdmembers``, ``etcdhealth`` or ``etcderror``)."""

    def script(self) -> str:
        public = tools.kubectl("get", "configmaps", "-n", "kube-public", "-o",
                               f"jsonpath={PUBLIC_JSONPATH}", timeout=tools.KUBECTL_READ_TIMEOUT)
        api = kubectl(
            "get", "nodes,secrets,configmaps", "-n", "kube-system", "-o", f"jsonpath={API_JSONPATH}"
        ) + f" && {{ {sh(public)} || true; }}" \
            + f" && {{ {NETWORK_LINE.format(get=sh(network_get()))} }}"
        # no ``public`` or ``network`` line (or an empty one): not known, not missing
        if not self.stacked:
            return api
        return api + "\n" + _STACKED_ETCD.format(
            manifest=ETCD_MANIFEST,
            members=sh(tools.etcdctl([STACKED_LOCAL], "member", "list", tls=tools.STACKED_ETCD,
                                     timeout=tools.ETCDCTL_READ_TIMEOUT)),
            health=sh(tools.etcdctl([STACKED_LOCAL], "endpoint", "health", "--cluster",
                                    tls=tools.STACKED_ETCD, timeout=tools.ETCDCTL_READ_TIMEOUT)))

    def parse(self, stdout: str) -> ApiAnswer:
        nodes: list[NodeInfo] = []
        certs: datetime | None = None
        tokens: list[BootstrapToken] = []
        config: KubeadmClusterConfig | None = None
        names: dict[str, tuple[str, ...]] = {}
        stacked: dict[str, Any] = {}
        network: dict[str, Any] | None = None
        not_ready: dict[str, str] = {}
        for line in stdout.splitlines():
            kind, _, rest = line.partition("\t")
            fields = rest.split("\t")
            if kind == "network":
                network = network_objects(rest)
            elif kind in ("etcdmembers", "etcdhealth", "etcderror"):
                stacked[kind] = rest
            elif kind in ("configmaps", "public"):
                names[kind] = tuple(sorted(f for f in fields if f))
            elif kind == "node":
                nodes.append(node := _node(fields))
                if not node.ready:
                    reason, message = (fields + [""] * 7)[5:7]
                    not_ready[node.name] = ": ".join(p for p in (reason, message) if p) \
                        or "no Ready condition"
            elif kind == "secret":
                name, type_, created, expiration, auth, signing = (fields + [""] * 6)[:6]
                if name == "kubeadm-certs":
                    certs = parse_time(created)
                elif type_ == "bootstrap.kubernetes.io/token" and name.startswith(
                    "bootstrap-token-"
                ):
                    tokens.append(_token(name, expiration, auth, signing))
            elif kind == "config" and fields[0] == "ConfigMap":
                try:
                    data = json.loads(rest.partition("\t")[2] or "{}")
                except ValueError as exc:
                    raise FactParseError(f"kubeadm-config data is not JSON: {exc}") from exc
                text = data.get("ClusterConfiguration") if isinstance(data, dict) else None
                config = cluster_config(text) if text else None
            elif line.strip():
                raise FactParseError(f"unexpected line: {line[:120]!r}")
        return ApiAnswer(
            nodes=tuple(sorted(nodes, key=lambda n: n.name)),
            secrets=KubeSystemSecrets(certs, tuple(sorted(tokens, key=lambda t: t.token_id))),
            config=config,
            configmaps=names.get("configmaps"),
            public_configmaps=names.get("public"),
            stacked_etcd=_stacked_etcd(stacked) if self.stacked else None,
            network=network,
            not_ready=not_ready,
        )


_STACKED_ETCD = """__hactl_rc=$?
if [ "$__hactl_rc" = 0 ]; then
  if [ ! -f {manifest} ]; then
    printf 'etcderror\\t%s\\n' "no {manifest} on this master"
  elif __hactl_out=$({members} 2>&1); then
    printf 'etcdmembers\\t%s\\n' "$(printf %s "$__hactl_out" | tr -d '\\n\\t')"
    printf 'etcdhealth\\t%s\\n' "$({health} 2>/dev/null | tr -d '\\n\\t')"
  else
    printf 'etcderror\\t%s\\n' "$(printf %s "$__hactl_out" | tr '\\n\\t' '  ' | cut -c1-300)"
  fi
fi
return "$__hactl_rc"
"""
"""After the API query (its exit status kept): kubeadm's stacked etcd member list and every
listed member's health, each on one line (etcdctl's JSON without its newlines)."""
STACKED_LOCAL = "https://127.0.0.1:2379"
"""The stacked member on the master itself (kubeadm's etcd listens on loopback too)."""


@dataclass(frozen=True)
class StackedEtcd:
    members: tuple[EtcdMember, ...] | None
    health: Mapping[str, bool] | None
    error: str | None


def _stacked_etcd(lines: Mapping[str, str]) -> StackedEtcd:
    """The ``etcdmembers`` / ``etcdhealth`` / ``etcderror`` lines → :class:`StackedEtcd`."""
    from hactl.facts.etcd import parse_endpoint_health, parse_member_list

    if "etcdmembers" not in lines:
        return StackedEtcd(None, None, lines.get("etcderror") or "no member list in the answer")
    members = parse_member_list(lines["etcdmembers"])
    health: dict[str, bool] | None = None
    text = lines.get("etcdhealth", "").strip()
    if text:
        try:
            health = {h.endpoint: h.healthy for h in parse_endpoint_health(text)}
        except FactParseError:
            health = None
    return StackedEtcd(members, health, None if health is not None else "no health answer")


def cluster_view(answer: ApiAnswer | None, error: str | None) -> ClusterView:
    """The API's answer (or why there is none) as the model's :class:`ClusterView`."""
    if answer is None:
        return ClusterView(errors={"api": error or "no answer"})
    config = answer.config
    return ClusterView(
        nodes=answer.nodes,
        kubeadm_certs_created=answer.secrets.kubeadm_certs_created,
        bootstrap_tokens=answer.secrets.tokens,
        control_plane_endpoint=config.control_plane_endpoint if config else None,
        etcd_endpoints=config.etcd_endpoints if config else (),
        kubernetes_version=config.kubernetes_version if config else None,
        pod_subnet=config.pod_subnet if config else None,
        service_subnet=config.service_subnet if config else None,
        dns_domain=config.dns_domain if config else None,
        configmaps=answer.configmaps,
        public_configmaps=answer.public_configmaps,
        stacked_members=answer.stacked_etcd.members if answer.stacked_etcd else None,
        stacked_health=answer.stacked_etcd.health if answer.stacked_etcd else None,
        stacked_error=answer.stacked_etcd.error if answer.stacked_etcd else None,
        network_objects=answer.network,
        not_ready=answer.not_ready,
    )


def assemble(
    *,
    files: K8sFileInfo,
    kubelet: UnitState | None,
    certs: CertReadings | None,
    cluster: ClusterView | None,
) -> KubernetesFacts:
    certs = certs or CertReadings({}, {}, {})
    return KubernetesFacts(
        admin_conf=files.admin_conf,
        kubelet_conf=files.kubelet_conf,
        manifests=files.manifests,
        pki_files=files.pki_files,
        kubelet_active=kubelet.active if kubelet else False,
        kubelet_enabled=kubelet.enabled if kubelet else False,
        cert_expiry={path: end for path, end in certs.items() if path.startswith(f"{PKI}/")},
        cluster=cluster,
        kubeconfigs=files.kubeconfigs,
        kubelet_config=files.kubelet_config,
        etcd_servers=files.etcd_servers,
        kubelet_client_cert=certs.dates(KUBELET_CLIENT_CERT),
        kubelet_rotates_certificates=files.rotates_certificates,
        apiserver_sans=certs.names.get(APISERVER_CERT),
    )
