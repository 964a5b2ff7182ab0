"""The cluster spec: frozen pydantic models, one docstring per field.

YAML keys are camelCase (``controlPlaneEndpoint``); Python attributes are snake_case. Every model
forbids unknown keys (the loader turns them into "did you mean …" errors). This module imports
nothing else of hactl and does no I/O; cross-field rules live in :mod:`hactl.spec.checks`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

API_VERSION = "hactl.dev/v1alpha1"
DEFAULT_API_PORT = 6443
LAB_RANGE = ipaddress.IPv4Network("198.18.0.0/15")

_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$")


def parse_version(text: str) -> tuple[int, int, int]:
    """``"v1.30.4"`` or ``"1.30.4"`` → ``(1, 30, 4)``; ValueError otherwise."""
    match = _VERSION_RE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a version like 1.30.4")
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
        if not _DNS_LABEL_RE.match(value):
            raise ValueError(
                f"{value!r} is not a DNS label: use lower-case letters, digits and '-', e.g. 'prod-eu1'"
            )
        return value


class SSHOverride(Model):
    """Per-host SSH settings; each field left out falls back to the spec's ``ssh`` defaults."""

    user: str | None = None
    """Login user on this host."""
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """SSH port on this host."""
    identity_file: str | None = None
    """Private key file for this host (relative paths are relative to the spec file)."""
    known_hosts_file: str | None = None
    """known_hosts file that holds this host's key."""
    host_key_policy: Literal["strict", "accept-new"] | None = None
    """``strict`` refuses unknown host keys; ``accept-new`` records them. A changed key is always refused."""
    connect_timeout: Annotated[float, Field(gt=0, le=600)] | None = None
    """Seconds to wait for the TCP connection and SSH handshake."""
    bastion: str | None = None
    """Jump host as ``[user@]host[:port]``; ``""`` disables the default bastion for this host."""


class SSHSettings(Model):
    """How hactl reaches every host (the defaults; hosts may override any field)."""

    user: str = "root"
    """Login user. Steps run with ``sudo -n`` when it is not root."""
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    """SSH port."""
    identity_file: str | None = None
    """Private key file (relative paths are relative to the spec file). Without it, the ssh-agent
    and the user's default keys are tried."""
    use_agent: bool = True
    """Offer keys from the ssh-agent (``SSH_AUTH_SOCK``) when one is running."""
    known_hosts_file: str = "~/.ssh/known_hosts"
    """known_hosts file used to verify host keys (relative paths are relative to the spec file)."""
    host_key_policy: Literal["strict", "accept-new"] = "strict"
    """``strict`` refuses a host whose key is unknown (add it with ``ssh-keyscan``);
    ``accept-new`` records unknown keys. A changed key is refused under both."""
    connect_timeout: Annotated[float, Field(gt=0, le=600)] = 10.0
    """Seconds to wait for the TCP connection and SSH handshake."""
    bastion: str | None = None
    """Jump host for every host, as ``[user@]host[:port]``."""


class Host(Model):
    """A machine hactl manages over SSH."""

    name: Annotated[str, Field(min_length=1, max_length=63)]
    """Host name: unique in the spec; also the Kubernetes node name and the etcd member name."""
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    """The address hactl connects to and that the cluster's components use."""
    ssh: SSHOverride | None = None
    """Per-host SSH settings that override the spec's ``ssh`` defaults."""

    @field_validator("name")
    @classmethod
    def _hostname(cls, value: str) -> str:
        if not _DNS_LABEL_RE.match(value):
            raise ValueError(
                f"{value!r} is not a valid host name: use lower-case letters, digits and '-', "
                "e.g. 'master01'"
            )
        return value


class KubernetesSettings(Model):
    version: str
    """Kubernetes version that kubeadm installs, e.g. ``1.30.4`` (a leading ``v`` is allowed)."""
    pod_subnet: ipaddress.IPv4Network | ipaddress.IPv6Network = ipaddress.IPv4Network("10.244.0.0/16")
    """Pod network CIDR (kubeadm ``--pod-network-cidr``); must match the CNI plugin."""
    service_subnet: ipaddress.IPv4Network | ipaddress.IPv6Network = ipaddress.IPv4Network(
        "10.96.0.0/12"
    )
    """Service CIDR (kubeadm ``networking.serviceSubnet``)."""
    dns_domain: str = "cluster.local"
    """Cluster DNS domain (kubeadm ``networking.dnsDomain``)."""

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        parse_version(value)
        return value if value.startswith("v") else f"v{value}"

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
    """etcd data directory on each member."""
    client_port: Annotated[int, Field(ge=1, le=65535)] = 2379
    """Client port (``--listen-client-urls``)."""
    peer_port: Annotated[int, Field(ge=1, le=65535)] = 2380
    """Peer port (``--listen-peer-urls``)."""

    @field_validator("version")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        if value is not None:
            parse_version(value)
            return value.lstrip("v")
        return value


class LoadBalancerSettings(Model):
    kind: Literal["haproxy"] = "haproxy"
    """Load balancer software. Only ``haproxy`` for now."""
    hosts: Annotated[list[Host], Field(min_length=1)]
    """Hosts that run the load balancer (two or more with a ``vip`` for redundancy)."""
    frontend_port: Annotated[int, Field(ge=1, le=65535)] = DEFAULT_API_PORT
    """Port the load balancer listens on for the Kubernetes API."""
    health_check: Literal["https-readyz", "tcp"] = "https-readyz"
    """``https-readyz`` asks each API server's ``GET /readyz`` over TLS and expects 200 (sees an API
    server that lost etcd); ``tcp`` only checks that the port is open."""
    balance: Literal["roundrobin", "leastconn", "source", "first"] = "roundrobin"
    """HAProxy balance algorithm for the API backend."""
    vip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    """Optional virtual IP shared by the load balancer hosts."""
    dns_name: str | None = None
    """Optional DNS name of the load balancer (e.g. ``loadbalancer.example.com``) that
    ``controlPlaneEndpoint`` may use."""

    @field_validator("dns_name")
    @classmethod
    def _dns_name(cls, value: str | None) -> str | None:
        if value is not None and not _HOSTNAME_RE.match(value):
            raise ValueError(f"{value!r} is not a DNS name like loadbalancer.example.com")
        return value


class ApplySettings(Model):
    parallelism: Annotated[int, Field(ge=1, le=1000)] = 10
    """How many steps run at once (``--parallelism`` overrides it)."""


class LabSettings(Model):
    """Only for ``hactl lab``: where the local test hosts live. Ignored by plan and apply."""

    subnet: ipaddress.IPv4Network = ipaddress.IPv4Network("198.18.0.0/24")
    """Lab network inside 198.18.0.0/15; its first address goes to the lab bridge."""
    state_dir: str | None = None
    """Folder for the lab's keys, known_hosts and node disks (default ``/var/lib/hactl-lab/NAME``)."""

    @field_validator("subnet")
    @classmethod
    def _in_lab_range(cls, value: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
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
    ``host`` is the load balancer's ``dnsName``, an LB host's name or address, or the ``vip``."""
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
    ssh: SSHSettings = SSHSettings()
    """SSH defaults for every host."""
    apply: ApplySettings = ApplySettings()
    """Settings for ``hactl apply``."""
    lab: LabSettings | None = None
    """Settings for ``hactl lab`` (local test hosts)."""

    @field_validator("control_plane_endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        split_endpoint(value)
        return value

    # -- derived views (no I/O) -------------------------------------------------------------

    @property
    def endpoint_host(self) -> str:
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
    """``"lb.example.com:6443"`` → ``("lb.example.com", 6443)``; the port defaults to 6443."""
    text = value.strip()
    if not text:
        raise ValueError("is empty; write host[:port], e.g. loadbalancer.example.com:6443")
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    if "://" in value or "/" in host:
        raise ValueError(f"{value!r} must be host[:port] without a scheme or path")
    port = DEFAULT_API_PORT
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"{value!r} has an invalid port {port_text!r}; use 1-65535")
        port = int(port_text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME_RE.match(host):
            raise ValueError(f"{host!r} is neither an IP address nor a DNS name") from None
    return host, port


def ssh_for(cluster: Cluster, host: Host) -> SSHSettings:
    """The effective SSH settings of ``host``: the spec's defaults overridden by ``host.ssh``."""
    if host.ssh is None:
        return cluster.ssh
    overrides = {k: v for k, v in host.ssh.model_dump().items() if v is not None}
    if overrides.get("bastion") == "":
        overrides["bastion"] = None
    return cluster.ssh.model_copy(update=overrides)
