"""What the probe observed: frozen dataclasses, no I/O.

``Observed`` holds one :class:`HostFacts` per host (keyed by host name) and the probe time. A
host's facts are split by domain (system, binaries, etcd, haproxy, kubernetes); each domain is
``None`` when the host could not be reached or that part of the probe failed (the reason is in
``HostFacts.error`` / ``HostFacts.section_errors``). Values that change on their own between two
probes (timestamps, durations, raft indexes, DB sizes) are marked ``volatile`` and left out of
:meth:`HostFacts.fingerprint`, which a saved plan uses to detect that the hosts moved on.

Nothing secret is ever stored here: bootstrap tokens appear by id only (never their secret part)
and certificate keys not at all. See docs/probe.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from hactl.spec.models import Cluster

VOLATILE: Mapping[str, Any] = {"volatile": True}
"""Field metadata: value changes by itself between probes; excluded from fingerprints."""

DataDirState = Literal["absent", "empty", "member", "nested", "other"]
"""etcd data dir: missing, empty, holds ``member/`` (a member's WAL+snap), holds a member one
level down (``*/member``: another etcd's data dir inside it, e.g. Debian's
``/var/lib/etcd/default``), or other files only."""

ServerStatus = Literal["UP", "DOWN", "MAINT", "NOLB", "DRAIN", "no check", "unknown"]


def volatile(default: Any = None) -> Any:
    """A dataclass field excluded from fingerprints."""
    return field(default=default, metadata=VOLATILE, compare=False)


# -- system ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SystemFacts:
    hostname: str
    """``hostname`` as the host reports it."""
    os_id: str | None = None
    """``ID`` from /etc/os-release, e.g. ``debian``."""
    os_version: str | None = None
    """``VERSION_ID`` from /etc/os-release, e.g. ``12``."""
    os_pretty: str | None = None
    """``PRETTY_NAME`` from /etc/os-release."""
    init_system: str = "unknown"
    """``systemd`` when ``systemctl`` is on PATH (real or the lab's stand-in), else ``unknown``."""
    kernel: str | None = None
    """``uname -r``."""
    user: str | None = None
    """Remote user the probe ran as (``id -un``)."""
    uptime_seconds: float | None = volatile()
    """From /proc/uptime (volatile)."""


# -- binaries -------------------------------------------------------------------------------

BINARY_NAMES: tuple[str, ...] = ("etcd", "etcdctl", "haproxy", "kubeadm", "kubelet", "kubectl")


@dataclass(frozen=True)
class Binary:
    path: str
    """Absolute path found on PATH (``command -v``)."""
    version: str | None
    """Version without a leading ``v`` (``3.4.23``, ``1.30.4``, ``2.6.12``); None if unreadable
    or not asked (kubeadm/kubelet on a joined node: see :mod:`hactl.facts.binaries`)."""


@dataclass(frozen=True)
class BinariesFacts:
    found: Mapping[str, Binary | None]
    """Every binary looked for on this host (those of its roles) → the binary, or None when
    not installed. A name that was not looked for is absent (``get`` → None)."""

    def get(self, name: str) -> Binary | None:
        return self.found.get(name)

    def version(self, name: str) -> str | None:
        binary = self.found.get(name)
        return binary.version if binary else None


# -- etcd -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EtcdMember:
    id: str
    """Member ID as etcdctl prints it in tables: lower-case hex, no leading zeros (``8e9e05c52164694d``)."""
    name: str
    """Member name; empty for a member that was added but never started."""
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    """Empty for a member that was added but never started."""
    is_learner: bool = False

    @property
    def started(self) -> bool:
        """etcdctl prints ``unstarted`` for members with no name yet."""
        return bool(self.name)


@dataclass(frozen=True)
class EtcdHealth:
    endpoint: str
    healthy: bool
    error: str | None = None
    took: str | None = volatile()


@dataclass(frozen=True)
class EtcdStatus:
    """``etcdctl endpoint status`` of this member."""

    endpoint: str
    member_id: str
    cluster_id: str
    version: str
    """etcd server version, e.g. ``3.4.23``."""
    is_learner: bool = False
    leader_id: str | None = volatile()
    raft_term: int | None = volatile()
    raft_index: int | None = volatile()
    db_size: int | None = volatile()
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class EtcdFacts:
    unit_present: bool
    """/etc/systemd/system/etcd.service (the unit hactl renders) exists; a distro unit under
    /lib/systemd does not count."""
    active: bool
    """systemd's ActiveState of etcd.service is ``active``."""
    enabled: bool
    """systemd's UnitFileState of etcd.service is enabled (or static/alias)."""
    env_present: bool
    """The env file that hactl renders (``/etc/etcd/etcd.env``) exists."""
    env_sha256: str | None
    """sha256 of the env file's content."""
    env: Mapping[str, str]
    """``ETCD_*`` variables parsed from the env file (no secrets live there: paths and URLs)."""
    data_dir: str
    data_dir_state: DataDirState
    ca_fingerprint: str | None
    """SHA-256 of the etcd CA certificate (DER), ``AA:BB:…``, or None when /etc/etcd/pki/ca.crt is absent."""
    members: tuple[EtcdMember, ...] | None = None
    """``member list`` as seen from this member; None when the query failed (see ``query_error``)."""
    status: EtcdStatus | None = None
    health: EtcdHealth | None = None
    """``endpoint health`` of this member only (each member is asked about itself)."""
    registry_keys: int | None = None
    """Number of keys under ``/registry`` (Kubernetes data); None when not queried/failed."""
    query_error: str | None = None
    """Why the member could not be queried (service down, TLS, timeout…)."""
    unit_sha256: str | None = None
    """sha256 of /etc/systemd/system/etcd.service (the unit hactl renders), None when absent."""
    nested_member: str | None = None
    """With ``data_dir_state == "nested"``: the ``member`` directory found below the data dir."""
    ca_key_present: bool = False
    """/etc/etcd/pki/ca.key exists (hactl keeps the etcd CA key on the members; a cluster built
    by hand may not): needed to issue a new member's certificates."""
    data_dir_entries: int = 0
    """How many entries the data dir holds (what a new member's start would move aside)."""
    data_dir_names: tuple[str, ...] = ()
    """The first ten of those entries' names (the plan says what it moves)."""
    running_env: Mapping[str, str] | None = None
    """The ``ETCD_*`` environment of the running etcd process (``/proc/<MainPID>/environ``):
    what is *active*, against ``env`` (what is *written*). None when etcd is not active or the
    environment could not be read (then nothing is compared)."""
    pki_missing: tuple[str, ...] = ()
    """The member's own certificate files (server, peer, healthcheck-client: .crt and .key) that
    are absent under /etc/etcd/pki; an install that stopped half-way leaves some."""
    bootstrap_pending: bool = False
    """/etc/etcd/hactl-bootstrap-pending exists: hactl's bootstrap of a new cluster started this
    member (the marker is written before the start) and has not yet seen the cluster healthy
    (the health wait removes it from every member). Proof that a member whose peers never
    started holds the data of a cluster that never formed, so its bootstrap can be finished."""
    cert_expiry: Mapping[str, datetime] = field(default_factory=dict)
    """Certificate path (``/etc/etcd/pki/*.crt``: the CA, server, peer, healthcheck-client) →
    notAfter (UTC), read with ``openssl x509 -enddate``; empty without openssl."""

    @property
    def initial_cluster(self) -> str | None:
        return self.env.get("ETCD_INITIAL_CLUSTER")

    @property
    def initial_cluster_state(self) -> str | None:
        return self.env.get("ETCD_INITIAL_CLUSTER_STATE")

    @property
    def server_version(self) -> str | None:
        return self.status.version if self.status else None

    @property
    def has_registry_data(self) -> bool | None:
        return None if self.registry_keys is None else self.registry_keys > 0


# -- haproxy --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackendServer:
    backend: str
    server: str
    status: ServerStatus
    """Normalised HAProxy ``status``: ``UP 1/3`` → ``UP``, ``DOWN 1/2`` → ``DOWN``, ``MAINT (via …)`` → ``MAINT``."""
    raw_status: str = volatile("")
    check_status: str | None = volatile()
    """e.g. ``L7OK``, ``L4CON``, ``L6TOUT``."""


@dataclass(frozen=True)
class HAProxyFacts:
    config_present: bool
    config_sha256: str | None
    config: str | None
    """Content of /etc/haproxy/haproxy.cfg; passwords a person added by hand (``stats auth``,
    ``userlist``) are masked, ``config_sha256`` is of the real file."""
    active: bool
    enabled: bool
    servers: tuple[BackendServer, ...] = ()
    """From the stats socket ``show stat``; empty when the socket is absent/unreadable."""
    stats_error: str | None = None
    config_loaded: bool = True
    """The running haproxy loaded the file as it is now (False: written after the last
    (re)load, e.g. an apply killed between ``mv`` and ``reload``: a graceful reload is due).
    True when it cannot be told (not running: starting it loads the file)."""
    loaded_sha256: str | None = None
    """hactl's marker /run/hactl/haproxy.sha256: the file it last (re)loaded haproxy with."""
    loaded_why: str = ""
    """How ``config_loaded`` was decided (said in the plan when a reload is due)."""

    def backend(self, name: str) -> dict[str, ServerStatus]:
        """``{server name: status}`` of one backend."""
        return {s.server: s.status for s in self.servers if s.backend == name}


# -- kubernetes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeInfo:
    name: str
    ready: bool
    labels: Mapping[str, str]
    kubelet_version: str | None = None
    internal_ips: tuple[str, ...] = ()
    """``status.addresses`` of type ``InternalIP`` (two on a dual-stack Node), as the API
    writes them; empty when the Node reports none (then nothing is compared)."""

    @property
    def control_plane(self) -> bool:
        return "node-role.kubernetes.io/control-plane" in self.labels


@dataclass(frozen=True)
class CertDates:
    """A certificate's validity, notBefore and notAfter (UTC)."""

    not_after: datetime
    not_before: datetime | None = None
    """None when not known (then the share of its life used is not known either)."""

    def life_used(self, now: datetime) -> float | None:
        """Share of the validity that has passed at ``now`` (0.0 new, 1.0 expired); None when
        the start is not known or the validity is empty."""
        if self.not_before is None or self.not_after <= self.not_before:
            return None
        return (now - self.not_before) / (self.not_after - self.not_before)


@dataclass(frozen=True)
class ServingNames:
    """The subjectAltName of a serving certificate: what clients may call the server. IP
    addresses in Python's normal form (``fd00::10``), DNS names as written."""

    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class BootstrapToken:
    token_id: str
    """The public part only (``abcdef``); the secret part is never read off the host."""
    expiration: datetime | None
    usages: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterView:
    """What a master's API server says, read with its admin.conf (None fields = not found)."""

    nodes: tuple[NodeInfo, ...] = ()
    kubeadm_certs_created: datetime | None = None
    """creationTimestamp of kube-system/kubeadm-certs (the uploaded certs live 2 h); None if absent."""
    bootstrap_tokens: tuple[BootstrapToken, ...] = ()
    control_plane_endpoint: str | None = None
    """ClusterConfiguration.controlPlaneEndpoint from kube-system/kubeadm-config."""
    etcd_endpoints: tuple[str, ...] = ()
    """ClusterConfiguration.etcd.external.endpoints (empty for stacked etcd)."""
    kubernetes_version: str | None = None
    """ClusterConfiguration.kubernetesVersion (``v1.30.4``)."""
    errors: Mapping[str, str] = field(default_factory=dict)
    """``{"api": why}`` when the API query failed (then the other fields are empty)."""
    configmaps: tuple[str, ...] | None = None
    """Names of the kube-system ConfigMaps (``kubeadm-config``, ``kubelet-config`` …), sorted;
    None = not asked (then kubeadm init's API phases are taken as done)."""
    public_configmaps: tuple[str, ...] | None = None
    """Names of the kube-public ConfigMaps (``cluster-info``), sorted; None = not asked."""
    pod_subnet: str | None = None
    """ClusterConfiguration.networking.podSubnet; None when not set or not read."""
    service_subnet: str | None = None
    """ClusterConfiguration.networking.serviceSubnet; None when not read."""
    dns_domain: str | None = None
    """ClusterConfiguration.networking.dnsDomain; None when not read."""
    stacked_members: tuple[EtcdMember, ...] | None = None
    """Stacked etcd only: kubeadm's etcd member list, read through the member on the master
    that answered for the API (kubeadm's healthcheck client); None when not asked or not read."""
    stacked_health: Mapping[str, bool] | None = None
    """Stacked etcd only: client URL → healthy, each listed member asked about itself
    (``etcdctl endpoint health --cluster``); None when not asked or not read."""
    stacked_error: str | None = None
    """Why the stacked member list could not be read (when it was asked)."""
    network_objects: Mapping[str, Any] | None = None
    """The pod network's live objects (those carrying hactl's ``app.kubernetes.io/managed-by``
    label, of the kinds :data:`hactl.render.cni.KINDS`): ``Kind/namespace/name`` → the object
    without status and server-written metadata. None: not read (then nothing is compared)."""
    not_ready: Mapping[str, str] = field(default_factory=dict)
    """NotReady Node → its Ready condition's ``reason: message`` (what the kubelet says)."""

    def node(self, name: str) -> NodeInfo | None:
        return next((n for n in self.nodes if n.name == name), None)

    def kubeadm_certs_age(self, now: datetime) -> float | None:
        """Seconds since the certificate key's Secret was created; None if there is none."""
        if self.kubeadm_certs_created is None:
            return None
        return (now - self.kubeadm_certs_created).total_seconds()


INIT_PHASES = ("certs", "kubeconfig", "etcd", "control-plane", "kubelet-start", "upload-config",
               "upload-certs", "mark-control-plane", "bootstrap-token", "kubelet-finalize", "addon")
"""kubeadm init's phases that leave something behind, in kubeadm's order (preflight,
wait-control-plane and show-join-command leave nothing). ``upload-certs`` is never completed
here: hactl uploads the certificates under a fresh key before each join batch."""
INIT_CERTS = ("apiserver-kubelet-client.crt", "apiserver-kubelet-client.key", "apiserver.crt",
              "apiserver.key", "ca.crt", "ca.key", "front-proxy-ca.crt", "front-proxy-ca.key",
              "front-proxy-client.crt", "front-proxy-client.key", "sa.key", "sa.pub")
STACKED_CERTS = ("apiserver-etcd-client.crt", "apiserver-etcd-client.key", "etcd/ca.crt", "etcd/ca.key",
                 "etcd/healthcheck-client.crt", "etcd/healthcheck-client.key", "etcd/peer.crt",
                 "etcd/peer.key", "etcd/server.crt", "etcd/server.key")
INIT_KUBECONFIGS = ("admin.conf", "controller-manager.conf", "kubelet.conf", "scheduler.conf")
CONTROL_PLANE_MANIFESTS = ("kube-apiserver.yaml", "kube-controller-manager.yaml", "kube-scheduler.yaml")
CA_PAIRS = (("ca.crt", "ca.key"), ("front-proxy-ca.crt", "front-proxy-ca.key"), ("sa.pub", "sa.key"))
"""A public half without its private key: kubeadm cannot sign (or re-create) what is missing."""


def _init_objects_present(view: ClusterView) -> bool:
    """The last API objects init makes that a view shows (unknown = present)."""
    if view.configmaps is None or view.public_configmaps is None:
        return True
    return "kubeadm-config" in view.configmaps and "cluster-info" in view.public_configmaps


def _api_phases(view: ClusterView, name: str) -> dict[str, bool]:
    """Which of init's API phases left their objects (unknown = done)."""
    maps = set(view.configmaps) if view.configmaps is not None else None
    public = set(view.public_configmaps) if view.public_configmaps is not None else None
    node = view.node(name)
    return {
        "upload-config": maps is None or {"kubeadm-config", "kubelet-config"} <= maps,
        "mark-control-plane": node is not None and node.control_plane,
        "bootstrap-token": public is None or "cluster-info" in public,
    }


@dataclass(frozen=True)
class KubernetesFacts:
    admin_conf: bool
    kubelet_conf: bool
    manifests: tuple[str, ...]
    """File names in /etc/kubernetes/manifests, sorted (``kube-apiserver.yaml`` …)."""
    pki_files: tuple[str, ...]
    """Paths under /etc/kubernetes/pki, relative, sorted (``ca.crt``, ``etcd/ca.crt`` …)."""
    kubelet_active: bool
    cert_expiry: Mapping[str, datetime]
    """Certificate path (absolute) → notAfter (UTC) for every .crt under /etc/kubernetes/pki."""
    cluster: ClusterView | None = None
    """Only on masters that have admin.conf and whose API answered."""
    kubelet_enabled: bool = False
    """systemd's UnitFileState of kubelet.service is enabled: the node comes back after a reboot."""
    kubeconfigs: tuple[str, ...] | None = None
    """``/etc/kubernetes/*.conf`` names, sorted; None = not probed (then kubeadm init's phases
    are not checked on this host)."""
    kubelet_config: bool = False
    """/var/lib/kubelet/config.yaml exists (written by kubeadm's kubelet-start phase)."""
    etcd_servers: tuple[str, ...] | None = None
    """``--etcd-servers`` of /etc/kubernetes/manifests/kube-apiserver.yaml: the etcd client URLs
    this master's API server uses. None when there is no manifest, no such flag, or it was not
    probed (then nothing is compared)."""
    kubelet_client_cert: CertDates | None = None
    """Validity of /var/lib/kubelet/pki/kubelet-client-current.pem (the kubelet's client
    certificate; only its certificate block leaves the host, never the key beside it). None
    when the file is absent or holds no readable certificate (then nothing is compared)."""
    kubelet_rotates_certificates: bool | None = None
    """``rotateCertificates`` of /var/lib/kubelet/config.yaml (false when the file leaves it out:
    the KubeletConfiguration default); None when there is no such file or its value is not a
    boolean."""
    apiserver_sans: ServingNames | None = None
    """subjectAltName of /etc/kubernetes/pki/apiserver.crt (the API server's serving
    certificate); None when the file is absent or does not read as a certificate (then nothing
    is compared). A certificate without the extension has empty names."""

    @property
    def initialised(self) -> bool:
        """This node runs a control plane: admin.conf and the API server manifest exist."""
        return self.admin_conf and "kube-apiserver.yaml" in self.manifests

    @property
    def init_started(self) -> bool:
        """kubeadm (init or a control-plane join) wrote something of its own here: the cluster
        CA's key, admin.conf or a static Pod manifest (hactl's own etcd client files before
        init are none of these)."""
        return "ca.key" in self.pki_files or self.admin_conf or bool(self.manifests)

    def missing_init_phases(self, view: ClusterView | None, name: str, *, stacked: bool) -> tuple[str, ...]:
        """kubeadm init's phases still to run on ``name`` (see :data:`INIT_PHASES`), from the
        first one whose result is missing to the end: kubeadm runs them in that order, so
        nothing after a missing phase has run. Empty when init finished, when this host was
        not probed for it, or when the files are complete and the API did not answer (then
        nothing shows what is missing)."""
        if self.kubeconfigs is None:
            return ()
        done = self._file_phases(stacked=stacked)
        if all(done.values()):
            if view is None or view.errors:
                return ()
            done.update(_api_phases(view, name))
        phases = [p for p in INIT_PHASES if p != "upload-certs" and (stacked or p != "etcd")]
        first = next((i for i, p in enumerate(phases) if not done.get(p, True)), None)
        return () if first is None else tuple(phases[first:])

    def _file_phases(self, *, stacked: bool) -> dict[str, bool]:
        pki = set(self.pki_files)
        certs = INIT_CERTS + (STACKED_CERTS if stacked else ())
        return {
            "certs": pki.issuperset(certs),
            "kubeconfig": set(self.kubeconfigs or ()).issuperset(INIT_KUBECONFIGS),
            "etcd": not stacked or "etcd.yaml" in self.manifests,
            "control-plane": set(self.manifests).issuperset(CONTROL_PLANE_MANIFESTS),
            "kubelet-start": self.kubelet_config,
        }

    @property
    def joined(self) -> bool:
        """The kubelet of this node is part of a cluster (kubelet.conf exists)."""
        return self.kubelet_conf


# -- preflight ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listener:
    """A listening TCP socket (``ss -Hltnp``) on one of the ports preflight looks at."""

    port: int
    address: str
    """Local address as ss prints it (``0.0.0.0``, ``[::]``, ``*``, ``127.0.0.1``)."""
    process: str | None = None
    """The first process name ss shows (``users:(("nginx",…))``); None without ``-p`` rights."""


@dataclass(frozen=True)
class RuntimeFacts:
    """The container runtime (containerd) of a node that has not joined yet."""

    socket: str
    """The CRI socket looked at (``/run/containerd/containerd.sock``)."""
    socket_present: bool
    answers: bool
    """``ctr --address SOCKET version`` answered with a server version (bounded by ``timeout``)."""
    error: str | None = None
    """Why it did not answer (ctr's last line, ``ctr not found``, ``timed out``)."""
    version: str | None = None
    """The runtime's version: the server's from ``ctr version``, else ``containerd --version``."""
    cgroup_driver: str | None = None
    """containerd's: ``systemd`` when /etc/containerd/config.toml sets ``SystemdCgroup = true``,
    ``cgroupfs`` otherwise (containerd's default), None when containerd is not installed."""
    kubelet_cgroup_driver: str | None = None
    """``cgroupDriver`` of /var/lib/kubelet/config.yaml; None when absent (kubeadm then writes
    its default, ``systemd``)."""


@dataclass(frozen=True)
class PreflightFacts:
    """What the plan's preflight reads on a host (:mod:`hactl.facts.preflight`, docs/hosts.md)."""

    swap: tuple[str, ...] = ()
    """Active swap areas (/proc/swaps entries)."""
    ip_forward: str | None = None
    """/proc/sys/net/ipv4/ip_forward (None: unreadable)."""
    bridge_nf_call_iptables: str | None = None
    """/proc/sys/net/bridge/bridge-nf-call-iptables (None: absent, br_netfilter not loaded)."""
    modules: tuple[str, ...] = ()
    """Of br_netfilter and overlay, those present (see :mod:`hactl.facts.preflight`)."""
    product_uuid: str | None = None
    """/sys/class/dmi/id/product_uuid, lower-case (None: absent or unreadable)."""
    macs: Mapping[str, str] = field(default_factory=dict)
    """Interface → MAC address of the interfaces backed by a device (/sys/class/net/*/device)."""
    listeners: tuple[Listener, ...] | None = None
    """Listeners on the ports looked at; None when ss did not run (nothing to check there)."""
    runtime: RuntimeFacts | None = None
    """None when not read (a joined node, or not a node)."""
    host_time: float | None = volatile()
    """The host's wall clock (``date +%s.%N``) while the script ran."""
    sent_at: float | None = volatile()
    """The operator's wall clock when the script was sent."""
    received_at: float | None = volatile()
    """The operator's wall clock when the answer had arrived."""

    @property
    def clock_skew(self) -> float | None:
        """Seconds by which the host's clock surely differs from the operator's: the distance
        from ``host_time`` to the interval [sent_at, received_at] (the round trip is not
        counted as skew). None when a time is missing."""
        if self.host_time is None or self.sent_at is None or self.received_at is None:
            return None
        return max(0.0, self.host_time - self.received_at, self.sent_at - self.host_time)


# -- host preparation -----------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    """An installed Debian package."""

    version: str
    """The installed version (``1.30.4-1.1``)."""
    held: bool
    """``apt-mark hold`` (dpkg's selection is ``hold``)."""


@dataclass(frozen=True)
class PrepareFacts:
    """What host preparation reads on a master or worker (:mod:`hactl.facts.prepare`)."""

    packages: Mapping[str, Package] = field(default_factory=dict)
    """Installed packages among those asked about (absent: not installed)."""
    files: Mapping[str, str] = field(default_factory=dict)
    """Path → sha256 of the preparation files that exist."""
    fstab_swap: tuple[str, ...] = ()
    """Devices or files of /etc/fstab's active swap entries."""

    def installed(self, name: str) -> str | None:
        package = self.packages.get(name)
        return package.version if package is not None else None


# -- per host and the whole observation -------------------------------------------------------


@dataclass(frozen=True)
class HostFacts:
    name: str
    address: str
    reachable: bool
    error: str | None = None
    """Why the host was unreachable (with what to do), when ``reachable`` is False."""
    system: SystemFacts | None = None
    binaries: BinariesFacts | None = None
    etcd: EtcdFacts | None = None
    """None on hosts that are not etcd members in the spec, or when this part failed."""
    haproxy: HAProxyFacts | None = None
    """None on hosts that are not load balancers in the spec, or when this part failed."""
    kubernetes: KubernetesFacts | None = None
    """None on hosts that are neither masters nor workers, or when this part failed."""
    preflight: PreflightFacts | None = None
    """What the plan's preflight checks; None when the section did not run or failed."""
    prepare: PrepareFacts | None = None
    """What host preparation reads (masters and workers, only when the spec has ``prepare``)."""
    section_errors: Mapping[str, str] = field(default_factory=dict)
    """Probe section → error (a section that failed to run or parse); the rest are still valid."""
    duration: float | None = volatile()
    """Seconds the probe of this host took (volatile)."""

    def fingerprint(self) -> str:
        """Stable sha256 of the non-volatile facts: the same host state gives the same value."""
        canon = json.dumps(
            to_data(self, include_volatile=False), sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(canon.encode()).hexdigest()


@dataclass(frozen=True)
class ClusterViews:
    """The cluster-wide reading of the facts, made once per probe (:meth:`Observed.views`) and
    shared by the diff, the refusals, the planner and the check, so that they cannot read the
    same facts differently."""

    members: tuple[EtcdMember, ...] | None
    """The etcd member list most of the spec's etcd members agree on (asked of hactl's etcd
    facts on ``cluster.etcd_members``); None when none of them could be asked."""
    api: ClusterView | None
    """The API's view, through the first of the spec's masters whose query answered."""
    initialised: str | None
    """The first master (spec order) that runs an initialised control plane."""
    half: tuple[str, tuple[str, ...]] | None
    """``(master, phases)`` of a ``kubeadm init`` stopped half-way."""


@dataclass(frozen=True)
class Observed:
    hosts: Mapping[str, HostFacts]
    probed_at: datetime = field(metadata=VOLATILE, compare=False)
    """When the probe started (UTC)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_views", {})

    def views(self, cluster: Cluster) -> ClusterViews:
        """The cluster-wide views for ``cluster``'s roles, computed on the first call and
        kept (the facts are frozen: every later call returns the same object)."""
        etcd = tuple(h.name for h in cluster.etcd_members)
        masters = tuple(h.name for h in cluster.masters)
        stacked = cluster.etcd.topology == "stacked"
        key = (etcd, masters, stacked)
        memo: dict[tuple[tuple[str, ...], tuple[str, ...], bool], ClusterViews] = \
            self._views  # type: ignore[attr-defined]
        found = memo.get(key)
        if found is None:
            found = memo[key] = ClusterViews(
                members=self.etcd_members(etcd),
                api=self.cluster_view(masters),
                initialised=self.first_initialised_master(masters),
                half=self.half_initialised(masters, stacked=stacked))
        return found

    def __getitem__(self, name: str) -> HostFacts:
        return self.hosts[name]

    def get(self, name: str) -> HostFacts | None:
        return self.hosts.get(name)

    def reachable(self, name: str) -> bool:
        host = self.hosts.get(name)
        return host is not None and host.reachable

    def unreachable(self) -> list[str]:
        return sorted(name for name, h in self.hosts.items() if not h.reachable)

    def fingerprint(self) -> dict[str, str]:
        """Per-host fact hashes, sorted by host name (what a saved plan records)."""
        return {name: self.hosts[name].fingerprint() for name in sorted(self.hosts)}

    # -- etcd views ---------------------------------------------------------------------

    def etcd(self, name: str) -> EtcdFacts | None:
        host = self.hosts.get(name)
        return host.etcd if host and host.reachable else None

    def etcd_member_views(
        self, names: Iterable[str] | None = None
    ) -> dict[str, tuple[EtcdMember, ...]]:
        """Host → member list as that member sees it (only hosts whose query worked)."""
        views: dict[str, tuple[EtcdMember, ...]] = {}
        for name in sorted(self.hosts) if names is None else names:
            facts = self.etcd(name)
            if facts is not None and facts.members is not None:
                views[name] = facts.members
        return views

    def etcd_members(self, names: Iterable[str] | None = None) -> tuple[EtcdMember, ...] | None:
        """The cluster's member list: the view most members agree on (ties → first host in
        order); None when no member could be asked. ``names`` limits/orders the hosts asked."""
        views = self.etcd_member_views(names)
        if not views:
            return None
        counts: dict[tuple[EtcdMember, ...], int] = {}
        for members in views.values():
            key = tuple(sorted(members, key=lambda m: m.id))
            counts[key] = counts.get(key, 0) + 1
        best = max(counts.values())
        for members in views.values():
            if counts[tuple(sorted(members, key=lambda m: m.id))] == best:
                return members
        return None  # pragma: no cover

    def etcd_healthy(self, name: str) -> bool:
        facts = self.etcd(name)
        return bool(facts and facts.health and facts.health.healthy)

    # -- kubernetes views ---------------------------------------------------------------

    def kubernetes(self, name: str) -> KubernetesFacts | None:
        host = self.hosts.get(name)
        return host.kubernetes if host and host.reachable else None

    def first_initialised_master(self, masters: Sequence[str]) -> str | None:
        """The first of ``masters`` (spec order) that runs an initialised control plane."""
        for name in masters:
            facts = self.kubernetes(name)
            if facts is not None and facts.initialised:
                return name
        return None

    def half_initialised(self, masters: Sequence[str], *, stacked: bool) -> tuple[str, tuple[str, ...]] | None:
        """``(master, phases)`` when a ``kubeadm init`` stopped half-way: the first of
        ``masters`` where kubeadm wrote something, and the init phases still to run there."""
        view = self.cluster_view(masters)
        if view is not None and _init_objects_present(view):
            return None  # kubeadm-config and cluster-info: init finished (joins read them)
        for name in masters:
            facts = self.kubernetes(name)
            if facts is None or not facts.init_started:
                continue
            missing = facts.missing_init_phases(view, name, stacked=stacked)
            return (name, missing) if missing else None
        return None

    def cluster_view(self, masters: Sequence[str]) -> ClusterView | None:
        """The API's view from the first of ``masters`` whose API query answered."""
        for name in masters:
            facts = self.kubernetes(name)
            if facts is not None and facts.cluster is not None and not facts.cluster.errors:
                return facts.cluster
        return None

    def haproxy(self, name: str) -> HAProxyFacts | None:
        host = self.hosts.get(name)
        return host.haproxy if host and host.reachable else None


def to_data(obj: Any, *, include_volatile: bool = True) -> Any:
    """Facts → JSON-able data (dataclasses → dicts, datetimes → ISO 8601, tuples → lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            if not include_volatile and f.metadata.get("volatile"):
                continue
            out[f.name] = to_data(getattr(obj, f.name), include_volatile=include_volatile)
        return out
    if isinstance(obj, Mapping):
        return {
            str(k): to_data(v, include_volatile=include_volatile) for k, v in sorted(obj.items())
        }
    if isinstance(obj, (tuple, list)):
        return [to_data(v, include_volatile=include_volatile) for v in obj]
    if isinstance(obj, datetime):
        return obj.isoformat()
    return obj
