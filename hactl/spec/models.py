"""The cluster spec: frozen pydantic models, one docstring per field.

YAML keys are camelCase (``controlPlaneEndpoint``); Python attributes are snake_case. Every model
forbids unknown keys (the loader turns them into "did you mean …" errors). This module imports
nothing else of hactl and does no I/O; cross-field rules live in :mod:`hactl.spec.checks`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, field_validator
from pydantic.alias_generators import to_camel
from pydantic.functional_validators import PlainValidator

from hactl.spec import values
from hactl.spec.network import NetworkSettings
from hactl.spec.prepare import PrepareSettings
from hactl.spec.values import DEFAULT_API_PORT, normalise_endpoint, show

LAB_RANGE = ipaddress.IPv4Network("198.18.0.0/15")

_VERSION_RE = re.compile(r"v?([0-9]{1,4})\.([0-9]{1,4})\.([0-9]{1,6})", re.ASCII)

#: A host address: no IPv6 zone, not unspecified, multicast or broadcast (see hactl.spec.values).
Address = Annotated[
    ipaddress.IPv4Address | ipaddress.IPv6Address,
    PlainValidator(values.ip_address),
    PlainSerializer(str, return_type=str, when_used="json"),
]
#: A file on the operator's machine (no control characters).
LocalPath = Annotated[str, AfterValidator(values.local_path)]
#: A login user name.
UserName = Annotated[str, AfterValidator(values.user_name)]
#: A jump host ``[user@]host[:port]``.
Bastion = Annotated[str, AfterValidator(values.bastion)]


def _network(field: str) -> PlainValidator:
    return PlainValidator(lambda value: values.ip_network(value, field=field))


def parse_version(text: str) -> tuple[int, int, int]:
    """``"v1.30.4"`` or ``"1.30.4"`` → ``(1, 30, 4)``; ValueError otherwise (no spaces)."""
    match = _VERSION_RE.fullmatch(text)
    if not match:
        raise ValueError(f"{show(text)} is not a version like 1.30.4")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


class Model(BaseModel):
    """Base of every spec model: frozen, unknown keys forbidden, camelCase in YAML."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
    )


class Metadata(Model):
    name: Annotated[str, Field(min_length=1, max_length=63)]
    """The cluster's name: a DNS label (lower-case letters, digits, '-'). Used for the lock and the lab."""

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        return values.dns_label(value, "prod-eu1")


class SSHOverride(Model):
    """Per-host SSH settings; each field left out falls back to the spec's ``ssh`` defaults."""

    user: UserName | None = None
    """Login user on this host (a user name: letters, digits, ``_``, ``.``, ``-``)."""
    port: Annotated[int, Field(ge=1, le=65535, strict=True)] | None = None
    """SSH port on this host."""
    identity_file: LocalPath | None = None
    """Private key file for this host (relative paths are relative to the spec file)."""
    known_hosts_file: LocalPath | None = None
    """known_hosts file that holds this host's key."""
    host_key_policy: Literal["strict", "accept-new"] | None = None
    """``strict`` refuses unknown host keys; ``accept-new`` records them. A changed key is always refused."""
    connect_timeout: Annotated[float, Field(gt=0, le=600, strict=True)] | None = None
    """Seconds to wait for the TCP connection and SSH handshake."""
    bastion: Bastion | None = None
    """Jump host as ``[user@]host[:port]``; ``""`` disables the default bastion for this host."""


class SSHSettings(Model):
    """How hactl reaches every host (the defaults; hosts may override any field)."""

    user: UserName = "root"
    """Login user (letters, digits, ``_``, ``.``, ``-``; at most 32). Steps run with ``sudo -n``
    when it is not root."""
    port: Annotated[int, Field(ge=1, le=65535, strict=True)] = 22
    """SSH port."""
    identity_file: LocalPath | None = None
    """Private key file (relative paths are relative to the spec file). Without it, the ssh-agent
    and the user's default keys are tried."""
    use_agent: Annotated[bool, Field(strict=True)] = True
    """Offer keys from the ssh-agent (``SSH_AUTH_SOCK``) when one is running."""
    known_hosts_file: LocalPath = "~/.ssh/known_hosts"
    """known_hosts file used to verify host keys (relative paths are relative to the spec file)."""
    host_key_policy: Literal["strict", "accept-new"] = "strict"
    """``strict`` refuses a host whose key is unknown (add it with ``ssh-keyscan``);
    ``accept-new`` records unknown keys. A changed key is refused under both."""
    connect_timeout: Annotated[float, Field(gt=0, le=600, strict=True)] = 10.0
    """Seconds to wait for the TCP connection and SSH handshake."""
    bastion: Bastion | None = None
    """Jump host for every host, as ``[user@]host[:port]`` (host: a DNS name, an IPv4 address or
    ``[IPv6]``; port 1-65535)."""


class Host(Model):
    """A machine hactl manages over SSH."""

    name: Annotated[str, Field(min_length=1, max_length=63)]
    """Host name: unique in the spec; also the Kubernetes node name and the etcd member name."""
    address: Address
    """The address hactl connects to and that the cluster's components use: IPv4 or IPv6, written
    as text, without an IPv6 zone (``%eth0``); not IPv6 link-local (``fe80::/10``, which needs a
    zone), unspecified (``0.0.0.0``, ``::``), multicast or broadcast."""
    ssh: SSHOverride | None = None
    """Per-host SSH settings that override the spec's ``ssh`` defaults."""
    ignore_preflight_errors: list[str] = []
    """Preflight checks ``hactl plan`` skips on this host, like kubeadm's
    ``--ignore-preflight-errors``: check names (case-insensitive, e.g. ``Swap``, ``Port-6443``),
    or ``all``. The plan lists what it skipped. The checks are in docs/hosts.md."""

    @field_validator("name")
    @classmethod
    def _hostname(cls, value: str) -> str:
        return values.dns_label(value, "master01")


class KubernetesSettings(Model):
    version: str
    """Kubernetes version that kubeadm installs, e.g. ``1.30.4`` (a leading ``v`` is allowed; no
    spaces)."""
    pod_subnet: Annotated[
        ipaddress.IPv4Network | ipaddress.IPv6Network,
        _network("podSubnet"),
        PlainSerializer(str, return_type=str, when_used="json"),
    ] = ipaddress.IPv4Network("10.244.0.0/16")
    """Pod network CIDR (kubeadm ``--pod-network-cidr``); must match the CNI plugin. Written with
    its prefix, no zone, /24 or larger (IPv6: /64 or larger): kubeadm gives each node a /24 (/64)."""
    service_subnet: Annotated[
        ipaddress.IPv4Network | ipaddress.IPv6Network,
        _network("serviceSubnet"),
        PlainSerializer(str, return_type=str, when_used="json"),
    ] = ipaddress.IPv4Network("10.96.0.0/12")
    """Service CIDR (kubeadm ``networking.serviceSubnet``): with its prefix, no zone, between /12
    and /28 (IPv6: /108 to /124), as kubeadm requires."""
    dns_domain: str = "cluster.local"
    """Cluster DNS domain (kubeadm ``networking.dnsDomain``): a lower-case DNS name."""

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        parse_version(value)
        return value if value.startswith("v") else f"v{value}"

    @field_validator("dns_domain")
    @classmethod
    def _dns_domain(cls, value: str) -> str:
        return values.dns_domain(value)

    @property
    def version_tuple(self) -> tuple[int, int, int]:
        return parse_version(self.version)


class EtcdSettings(Model):
    topology: Literal["external", "stacked"] = "external"
    """``external``: etcd runs on its own hosts (``members``), as in the reference topology.
    ``stacked``: kubeadm runs one etcd member on every master; ``members`` must be empty."""
    members: list[Host] = []
    """External etcd members (3 or 5 for high availability). Empty for ``stacked``."""
    version: str | None = None
    """The etcd version the members run, e.g. ``3.5.15``. Kubernetes 1.31+ needs 3.5.11 or newer;
    hactl checks this against the probed version too."""
    data_dir: str = "/var/lib/etcd"
    """etcd data directory on each member. hactl empties it as root before a new member starts
    (when it holds no member data), so it must be a folder dedicated to etcd: an absolute path in
    normal form (letters, digits, ``.``, ``_``, ``-`` between single ``/``; no ``.``, ``..`` or
    trailing ``/``), below ``/var/lib``, ``/srv``, ``/data``, ``/mnt`` or ``/opt`` and never one of
    them itself (nor ``/`` or any other system folder); a folder below that root has ``etcd`` in
    its name (under ``/var/lib``: the first one, and not ``hactl…``), and none is named
    ``member``, ``snap`` or ``wal``. E.g. ``/var/lib/etcd``, ``/data/etcd``, ``/mnt/disk1/etcd``."""
    client_port: Annotated[int, Field(ge=1, le=65535, strict=True)] = 2379
    """Client port (``--listen-client-urls``)."""
    peer_port: Annotated[int, Field(ge=1, le=65535, strict=True)] = 2380
    """Peer port (``--listen-peer-urls``)."""

    @field_validator("version")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        if value is not None:
            parse_version(value)
            return value[1:] if value.startswith("v") else value
        return value

    @field_validator("data_dir")
    @classmethod
    def _data_dir(cls, value: str) -> str:
        return values.data_dir(value)


class LoadBalancerSettings(Model):
    kind: Literal["haproxy"] = "haproxy"
    """Load balancer software. Only ``haproxy`` for now."""
    hosts: Annotated[list[Host], Field(min_length=1)]
    """Hosts that run the load balancer (two or more with a ``vip`` for redundancy)."""
    frontend_port: Annotated[int, Field(ge=1, le=65535, strict=True)] = DEFAULT_API_PORT
    """Port the load balancer listens on for the Kubernetes API."""
    health_check: Literal["https-readyz", "tcp"] = "https-readyz"
    """``https-readyz`` asks each API server's ``GET /readyz`` over TLS and expects 200 (sees an API
    server that lost etcd); ``tcp`` only checks that the port is open."""
    balance: Literal["roundrobin", "leastconn", "source", "first"] = "roundrobin"
    """HAProxy balance algorithm for the API backend."""
    vip: Address | None = None
    """Optional virtual IP shared by the load balancer hosts (same rules as a host's ``address``)."""
    dns_name: str | None = None
    """Optional DNS name of the load balancer (e.g. ``loadbalancer.example.com``, at most 253
    characters) that ``controlPlaneEndpoint`` may use."""

    @field_validator("dns_name")
    @classmethod
    def _dns_name(cls, value: str | None) -> str | None:
        return None if value is None else values.dns_name(value)


class CertificateSettings(Model):
    """How early ``hactl plan`` refuses to go on with certificates about to expire."""

    renew_before_days: Annotated[int, Field(ge=1, le=3650, strict=True)] = 30
    """Days before a certificate's expiry from which ``hactl plan`` refuses to go on until it is
    renewed (a whole number, 1 to 3650): kubeadm's certificates under /etc/kubernetes/pki on the
    masters and workers, and the etcd CA and member certificates under /etc/etcd/pki. hactl does
    not renew certificates yet; the refusal says how to by hand."""


class PreflightSettings(Model):
    """What ``hactl plan`` checks on the hosts before it plans a change (docs/hosts.md)."""

    ignore_errors: list[str] = []
    """Preflight checks skipped on every host: check names (case-insensitive), or ``all``.
    A host's own ``ignorePreflightErrors`` adds to this list."""
    max_clock_skew: Annotated[float, Field(gt=0, le=3600, strict=True)] = 1.0
    """Seconds a host's clock may differ from the operator's (the round trip of the probe is
    not counted) before the plan refuses (check ``ClockSkew``)."""


class ApplySettings(Model):
    parallelism: Annotated[int, Field(ge=1, le=1000, strict=True)] = 10
    """How many steps run at once (``--parallelism`` overrides it). Workers taken out of the
    spec are drained and removed in parallel, at most this many at once."""
    drain_timeout: Annotated[int, Field(ge=10, le=86400, strict=True)] = 300
    """Seconds a ``kubectl drain`` of a node that leaves the cluster may take (10 to 86400).
    The drain evicts pods through the eviction API, so PodDisruptionBudgets are respected; when
    it cannot finish in time the apply stops with the pods that blocked it and the node stays
    cordoned."""


class LabSettings(Model):
    """Only for ``hactl lab``: where the local test hosts live. Ignored by plan and apply."""

    subnet: ipaddress.IPv4Network = ipaddress.IPv4Network("198.18.0.0/24")
    """Lab network inside 198.18.0.0/15; its first address goes to the lab bridge."""
    state_dir: LocalPath | None = None
    """Folder for the lab's keys, known_hosts and node disks (default ``/var/lib/hactl-lab/NAME``)."""

    @field_validator("subnet")
    @classmethod
    def _in_lab_range(cls, value: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
        if value.prefixlen > 29:
            raise ValueError(
                f"{value} is too small for a lab (the bridge and the hosts need addresses); "
                "use /29 or larger, e.g. 198.18.0.0/24"
            )
        if not value.subnet_of(LAB_RANGE):
            raise ValueError(
                f"{value} is outside 198.18.0.0/15, the only range the lab may use; "
                "pick e.g. 198.18.0.0/24"
            )
        return value


class Cluster(Model):
    """A highly-available kubeadm control plane."""

    api_version: Literal["hactl.dev/v1alpha1"] = Field(alias="apiVersion")
    """Always ``hactl.dev/v1alpha1``."""
    kind: Literal["Cluster"]
    """Always ``Cluster``."""
    metadata: Metadata
    """The cluster's name."""
    control_plane_endpoint: str
    """``host[:port]`` of the load balancer in front of the API servers (port defaults to 6443).
    ``host`` is the load balancer's ``dnsName``, an LB host's name or address, or the ``vip``;
    an IPv6 address goes in brackets (``[fd00::10]:6443``). Stored in one normal form,
    ``host:port`` (port added, IPv6 bracketed and compressed, ASCII digits), which kubeadm, joins
    and the comparison with the running cluster all use; no whitespace."""
    kubernetes: KubernetesSettings
    """Kubernetes version and networks."""
    etcd: EtcdSettings = EtcdSettings()
    """The etcd cluster."""
    load_balancer: LoadBalancerSettings
    """The TCP load balancer on the API port."""
    masters: Annotated[list[Host], Field(min_length=1)]
    """Control-plane hosts; the first is the one ``kubeadm init`` runs on. 3 for high availability."""
    workers: list[Host] = []
    """Worker hosts."""
    network: NetworkSettings = NetworkSettings()
    """The pod network (CNI plugin) hactl installs after ``kubeadm init``: flannel by default."""
    prepare: PrepareSettings | None = None
    """Host preparation (opt-in): when set, apply makes every master and worker ready for kubeadm
    first (kernel settings, swap off, containerd, kubeadm/kubelet/kubectl at the spec's version
    from the repository named here, held). Without it hactl expects prepared hosts and the
    plan's preflight refuses hosts that are not."""
    ssh: SSHSettings = SSHSettings()
    """SSH defaults for every host."""
    certificates: CertificateSettings = CertificateSettings()
    """Certificate expiry: how early ``hactl plan`` refuses to go on until they are renewed."""
    apply: ApplySettings = ApplySettings()
    """Settings for ``hactl apply``."""
    preflight: PreflightSettings = PreflightSettings()
    """Preflight: checks skipped on every host, the clock skew allowed."""
    lab: LabSettings | None = None
    """Settings for ``hactl lab`` (local test hosts)."""

    @field_validator("control_plane_endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return normalise_endpoint(value)

    # -- derived views (no I/O) -------------------------------------------------------------

    @property
    def endpoint_host(self) -> str:
        """The endpoint's host without brackets (``fd00::10``): for certificate SANs and lookups.
        To build ``host:port`` use :attr:`control_plane_endpoint` (it brackets IPv6)."""
        return split_endpoint(self.control_plane_endpoint)[0]

    @property
    def endpoint_port(self) -> int:
        return split_endpoint(self.control_plane_endpoint)[1]

    @property
    def etcd_members(self) -> list[Host]:
        """The etcd members: ``etcd.members`` (external) or the masters (stacked)."""
        return list(self.masters) if self.etcd.topology == "stacked" else list(self.etcd.members)

    def all_hosts(self) -> list[Host]:
        """Every distinct host once (by name), in role order: etcd, LB, masters, workers."""
        seen: dict[str, Host] = {}
        for host in [*self.etcd.members, *self.load_balancer.hosts, *self.masters, *self.workers]:
            seen.setdefault(host.name, host)
        return list(seen.values())

    def roles(self, name: str) -> list[str]:
        """The roles of host ``name``: any of ``etcd``, ``lb``, ``master``, ``worker``."""
        roles = []
        if any(h.name == name for h in self.etcd_members):
            roles.append("etcd")
        if any(h.name == name for h in self.load_balancer.hosts):
            roles.append("lb")
        if any(h.name == name for h in self.masters):
            roles.append("master")
        if any(h.name == name for h in self.workers):
            roles.append("worker")
        return roles

    def host(self, name: str) -> Host:
        for host in self.all_hosts():
            if host.name == name:
                return host
        raise KeyError(name)


def split_endpoint(value: str) -> tuple[str, int]:
    """``"lb.example.com:6443"`` → ``("lb.example.com", 6443)``; ``"[fd00::10]"`` →
    ``("fd00::10", 6443)``: the port defaults to 6443; ValueError for anything that
    :func:`~hactl.spec.values.normalise_endpoint` refuses."""
    return values.split_host_port(
        value, default_port=DEFAULT_API_PORT, what="host[:port]", example="loadbalancer.example.com:6443"
    )


def ssh_for(cluster: Cluster, host: Host) -> SSHSettings:
    """The effective SSH settings of ``host``: the spec's defaults overridden by ``host.ssh``."""
    if host.ssh is None:
        return cluster.ssh
    overrides = {k: v for k, v in host.ssh.model_dump().items() if v is not None}
    if overrides.get("bastion") == "":
        overrides["bastion"] = None
    return cluster.ssh.model_copy(update=overrides)
