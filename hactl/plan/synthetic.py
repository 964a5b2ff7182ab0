"""Synthetic observations of a cluster in a known state, for tests and the planning benchmark.

    obs = Synthetic(cluster).etcd().lb().init().join("master02").observed()
    plan = build_plan(big_cluster(), Synthetic(big_cluster()).observed(), now=PROBED_AT)

Each method brings one part of the cluster to the state ``hactl apply`` would leave it in; what
is not brought up looks like a freshly installed host (binaries present, nothing configured).
Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hactl import hostlayout
from hactl.diff import client_url, peer_url, sha256_text
from hactl.facts.model import (
    BackendServer,
    BinariesFacts,
    Binary,
    CertDates,
    ClusterView,
    EtcdFacts,
    EtcdHealth,
    EtcdMember,
    EtcdStatus,
    HAProxyFacts,
    HostFacts,
    KubernetesFacts,
    NodeInfo,
    Observed,
    ServingNames,
    SystemFacts,
)
from hactl.plan import desired
from hactl.spec.models import Cluster, Host

PROBED_AT = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
CP_MANIFESTS = ("etcd.yaml", "kube-apiserver.yaml", "kube-controller-manager.yaml", "kube-scheduler.yaml")
CA_FP = "AB:" * 31 + "AB"
KUBELET_CERT = CertDates(not_after=PROBED_AT + timedelta(days=300), not_before=PROBED_AT - timedelta(days=65))
"""A kubelet client certificate of kubeadm's one year, 65 days old (rotation is not due)."""


def big_cluster(workers: int = 984, *, etcd: int = 5, lbs: int = 2, masters: int = 9) -> Cluster:
    """A large spec on 198.18.0.0/15 (1,000 hosts by default) for planning benchmarks."""
    addrs = iter(ipaddress.IPv4Network("198.18.0.0/15").hosts())
    next(addrs)

    def hosts(prefix: str, n: int) -> list[dict[str, str]]:
        return [{"name": f"{prefix}{i:04d}", "address": str(next(addrs))} for i in range(1, n + 1)]

    return Cluster.model_validate({
        "apiVersion": "hactl.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": "big"},
        "controlPlaneEndpoint": "api.big:6443",
        "kubernetes": {"version": "1.30.4"},
        "etcd": {"topology": "external", "members": hosts("etcd", etcd)},
        "loadBalancer": {"dnsName": "api.big", "hosts": hosts("lb", lbs)},
        "masters": hosts("master", masters), "workers": hosts("worker", workers),
    })


def member_id(name: str) -> str:
    return format(int(hashlib.sha256(name.encode()).hexdigest()[:15], 16), "x")


def stacked_member(name: str, address: str) -> EtcdMember:
    """kubeadm's stacked etcd member of master ``name`` at ``address`` (ports 2380 / 2379)."""
    return EtcdMember(member_id(name), name, (f"https://{address}:2380",), (f"https://{address}:2379",))


class Synthetic:
    def __init__(self, cluster: Cluster, *, etcd_version: str = "3.4.23") -> None:
        self.cluster = cluster
        self.etcd_version = etcd_version
        self.hosts: dict[str, HostFacts] = {}
        bins = BinariesFacts({
            "etcd": Binary("/usr/bin/etcd", etcd_version),
            "etcdctl": Binary("/usr/bin/etcdctl", etcd_version),
            "haproxy": Binary("/usr/sbin/haproxy", "2.6.12"),
            "kubeadm": Binary("/usr/local/sbin/kubeadm", cluster.kubernetes.version.lstrip("v")),
            "kubelet": Binary("/usr/local/sbin/kubelet", cluster.kubernetes.version.lstrip("v")),
            "kubectl": Binary("/usr/bin/kubectl", "1.32.0"),
        })
        etcd_names = {h.name for h in cluster.etcd_members} if cluster.etcd.topology == "external" else set()
        lb_names = {h.name for h in cluster.load_balancer.hosts}
        k8s_names = {h.name for h in (*cluster.masters, *cluster.workers)}
        for host in cluster.all_hosts():
            self.hosts[host.name] = HostFacts(
                name=host.name, address=str(host.address), reachable=True,
                system=SystemFacts(hostname=host.name, os_id="debian", os_version="12",
                                   init_system="systemd", user="root"),
                binaries=bins,
                etcd=EtcdFacts(False, False, False, False, None, {}, cluster.etcd.data_dir, "absent", None)
                if host.name in etcd_names else None,
                haproxy=HAProxyFacts(False, None, None, False, False) if host.name in lb_names else None,
                kubernetes=KubernetesFacts(False, False, (), (), False, {}) if host.name in k8s_names else None,
            )
        self.nodes: list[NodeInfo] = []
        self.certs_created: datetime | None = None
        self.stacked_members: list[EtcdMember] | None = None
        """Stacked etcd's member list (default: one started member per control-plane Node)."""
        self.stacked_down: set[str] = set()
        """Stacked members (by name) whose health check fails."""

    # -- parts ------------------------------------------------------------------------------

    def etcd(self, names: list[str] | None = None, *, registry_keys: int = 0) -> Synthetic:
        """The listed members (default: all) form a healthy cluster."""
        members = [h for h in self.cluster.etcd_members if names is None or h.name in names]
        listed = tuple(
            EtcdMember(member_id(h.name), h.name, (peer_url(self.cluster, h),), (client_url(self.cluster, h),))
            for h in members
        )
        for h in members:
            env = {"ETCD_NAME": h.name, "ETCD_DATA_DIR": self.cluster.etcd.data_dir,
                   "ETCD_INITIAL_ADVERTISE_PEER_URLS": peer_url(self.cluster, h),
                   "ETCD_ADVERTISE_CLIENT_URLS": client_url(self.cluster, h)}
            url = client_url(self.cluster, h)
            self._set(h.name, etcd=EtcdFacts(
                True, True, True, True, sha256_text(repr(env)), env, self.cluster.etcd.data_dir,
                "member", CA_FP, listed,
                EtcdStatus(url, member_id(h.name), "c1", self.etcd_version),
                EtcdHealth(url, True), registry_keys, ca_key_present=True,
                data_dir_entries=1, data_dir_names=("member",), running_env=dict(env)))
        return self

    def etcd_facts(self, name: str, **changes: object) -> Synthetic:
        facts = self.hosts[name].etcd
        assert facts is not None
        return self._set(name, etcd=replace(facts, **changes))  # type: ignore[arg-type]

    def lb(self, config: str | None = None) -> Synthetic:
        text = desired.haproxy_cfg(self.cluster) if config is None else config
        for h in self.cluster.load_balancer.hosts:
            servers = tuple(BackendServer("k8s-api-backend", m.name, "UP") for m in self.cluster.masters)
            self._set(h.name, haproxy=HAProxyFacts(True, sha256_text(text), text, True, True, servers))
        return self

    def init(self, *, endpoint: str | None = None) -> Synthetic:
        return self.join(self.cluster.masters[0].name, endpoint=endpoint)

    def join(self, *names: str, endpoint: str | None = None) -> Synthetic:
        masters = {h.name: h for h in self.cluster.masters}
        for name in names:
            cp = name in masters
            labels = {"node-role.kubernetes.io/control-plane": ""} if cp else {}
            address = self.hosts[name].address
            self.nodes = [n for n in self.nodes if n.name != name]
            self.nodes.append(NodeInfo(name, True, labels, self.cluster.kubernetes.version,
                                       internal_ips=(address,)))
            self._set(name, kubernetes=KubernetesFacts(
                admin_conf=cp, kubelet_conf=True, manifests=CP_MANIFESTS if cp else (),
                pki_files=("ca.crt",), kubelet_active=True, cert_expiry={},
                kubelet_enabled=True, etcd_servers=self._etcd_servers() if cp else None,
                kubelet_config=True, kubelet_client_cert=KUBELET_CERT,
                kubelet_rotates_certificates=True,
                apiserver_sans=self.apiserver_sans(masters[name]) if cp else None))
        self._endpoint = endpoint or getattr(self, "_endpoint", None) or self.cluster.control_plane_endpoint
        return self

    def apiserver_sans(self, master: Host) -> ServingNames:
        """The subjectAltName kubeadm gives ``master``'s apiserver.crt from hactl's config:
        the node name, the ``kubernetes`` Service names, the API Service's IP, the advertise
        address and ``apiServer.certSANs`` (:func:`api_server_cert_sans`)."""
        from hactl.render.kubeadm_config import api_server_cert_sans  # imports the PKI code

        domain = self.cluster.kubernetes.dns_domain
        dns = [master.name, "kubernetes", "kubernetes.default", "kubernetes.default.svc",
               f"kubernetes.default.svc.{domain}"]
        service_ip = self.cluster.kubernetes.service_subnet.network_address + 1
        ips = [str(service_ip), str(master.address)]
        for name in api_server_cert_sans(self.cluster):
            try:
                ips.append(str(ipaddress.ip_address(name)))
            except ValueError:
                dns.append(name)
        return ServingNames(tuple(dict.fromkeys(dns)), tuple(dict.fromkeys(ips)))

    def _etcd_servers(self) -> tuple[str, ...] | None:
        """kube-apiserver ``--etcd-servers`` as kubeadm writes it (external etcd only)."""
        if self.cluster.etcd.topology != "external":
            return None
        return tuple(client_url(self.cluster, h) for h in self.cluster.etcd_members)

    def converged(self) -> Synthetic:
        if self.cluster.etcd.topology == "external":
            self.etcd()
        self.lb()
        self.join(*[h.name for h in self.cluster.masters], *[h.name for h in self.cluster.workers])
        return self.network()

    def network(self) -> Synthetic:
        """The pod network installed as the spec renders it (what InstallPodNetwork leaves);
        without it the API view has no reading of the pod network (nothing is compared)."""
        self._network = True
        return self

    def _live_network(self) -> dict[str, object] | None:
        if not getattr(self, "_network", False):
            return None
        from hactl.render.cni import network_objects

        return {o.key: o.body for o in network_objects(self.cluster)}

    def prepared(self, key: bytes, *names: str) -> Synthetic:
        """Masters and workers (all, or ``names``) as host preparation leaves them, for the
        spec's ``prepare`` section and its repository key ``key``: kernel settings and files,
        swap off, containerd answering with the systemd cgroup driver, the packages at the
        spec's version and held."""
        from hactl.facts.model import Package, PreflightFacts, PrepareFacts, RuntimeFacts
        from hactl.render import prepare as render

        prepare = self.cluster.prepare
        assert prepare is not None, "the spec has no prepare section"
        keyring = render.keyring_path(key)
        version = render.package_version(self.cluster, prepare)
        files = {path: sha256_text(text) for path, text in (
            (hostlayout.MODULES_LOAD, render.modules_load()),
            (hostlayout.SYSCTL_CONF, render.sysctl_conf()),
            (hostlayout.CONTAINERD_CONFIG, render.containerd_config()),
            (hostlayout.APT_SOURCE, render.apt_source(prepare, self.cluster.kubernetes.version_tuple,
                                                      keyring)))}
        files[keyring] = hashlib.sha256(key).hexdigest()
        packages = {p: Package(version, held=True) for p in render.PACKAGES}
        packages[prepare.container_runtime.package] = Package("1.6.20~ds1-1+deb12u3", held=False)
        nodes = names or tuple(h.name for h in (*self.cluster.masters, *self.cluster.workers))
        for name in nodes:
            self._set(name, prepare=PrepareFacts(packages=packages, files=files),
                      preflight=PreflightFacts(
                          ip_forward="1", bridge_nf_call_iptables="1", modules=render.MODULES,
                          runtime=RuntimeFacts(hostlayout.CONTAINERD_SOCKET, True, True,
                                               version="1.6.20", cgroup_driver="systemd")))
        return self

    def unreachable(self, name: str, error: str = "connection refused") -> Synthetic:
        host = self.hosts[name]
        self.hosts[name] = HostFacts(name, host.address, False, error)
        return self

    def _set(self, name: str, **changes: object) -> Synthetic:
        self.hosts[name] = replace(self.hosts[name], **changes)  # type: ignore[arg-type]
        return self

    # -- result -----------------------------------------------------------------------------

    def observed(self) -> Observed:
        hosts = dict(self.hosts)
        if self.nodes:
            view = ClusterView(
                nodes=tuple(sorted(self.nodes, key=lambda n: n.name)),
                kubeadm_certs_created=self.certs_created,
                control_plane_endpoint=getattr(self, "_endpoint", None),
                etcd_endpoints=tuple(client_url(self.cluster, h) for h in self.cluster.etcd_members)
                if self.cluster.etcd.topology == "external" else (),
                kubernetes_version=self.cluster.kubernetes.version,
                pod_subnet=str(self.cluster.kubernetes.pod_subnet),
                service_subnet=str(self.cluster.kubernetes.service_subnet),
                dns_domain=self.cluster.kubernetes.dns_domain,
                network_objects=self._live_network(),
            )
            if self.cluster.etcd.topology == "stacked":
                members = self.stacked_members if self.stacked_members is not None else [
                    stacked_member(n.name, n.internal_ips[0]) for n in self.nodes
                    if n.control_plane and n.internal_ips]
                view = replace(view, stacked_members=tuple(members), stacked_health={
                    u: m.name not in self.stacked_down for m in members for u in m.client_urls})
            for h in self.cluster.masters:
                k = hosts[h.name].kubernetes if hosts[h.name].reachable else None
                if k is not None and k.initialised:
                    hosts[h.name] = replace(hosts[h.name], kubernetes=replace(k, cluster=view))
        return Observed(hosts, PROBED_AT)
