"""What a lab consists of, derived from a spec without any I/O: names, addresses, paths."""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hactl.spec.models import Cluster

LAB_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
DEFAULT_STATE_ROOT = "/var/lib/hactl-lab"
BRIDGE_PREFIX = "hlb-"
VETH_PREFIX = "hlv"
UPLINK_VETH_PREFIX = "hlu"
NETNS_PREFIX = "hl-"
MAX_NETNS = 48


def _digest(*parts: str, size: int) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:size]


@dataclass(frozen=True)
class Node:
    name: str
    address: ipaddress.IPv4Address
    netns: str
    veth: str
    dir: str
    ssh_port: int = 22
    uplink_address: ipaddress.IPv4Address | None = None
    """The node's address on its second interface (``eth1``, the default route's): the same
    host offset in the lab's uplink subnet (:func:`uplink_subnet`)."""
    uplink_veth: str = ""
    kube: bool = False
    """A Kubernetes node (master or worker): prepared nodes of this kind run containerd."""

    @property
    def pid_file(self) -> str:
        return os.path.join(self.dir, "pid")

    @property
    def config_file(self) -> str:
        return os.path.join(self.dir, "node.json")

    @property
    def console(self) -> str:
        return os.path.join(self.dir, "console.log")

    def upper(self, target: str) -> str:
        """Upper (writable) dir of the overlay mounted on ``target`` (``/etc`` or ``/var``)."""
        return os.path.join(self.dir, target.strip("/") + ".upper")

    def work(self, target: str) -> str:
        return os.path.join(self.dir, target.strip("/") + ".work")


@dataclass(frozen=True)
class Topology:
    name: str
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    bridge: str
    state_dir: str
    nodes: tuple[Node, ...]
    endpoint_name: str | None
    endpoint_address: ipaddress.IPv4Address | None
    kubernetes_version: str
    etcd_version: str | None
    uplink: ipaddress.IPv4Network | None = None
    uplink_gateway: ipaddress.IPv4Address | None = None
    uplink_bridge: str = ""

    @property
    def key_file(self) -> str:
        return os.path.join(self.state_dir, "id_ed25519")

    @property
    def known_hosts(self) -> str:
        return os.path.join(self.state_dir, "known_hosts")

    @property
    def bin_dir(self) -> str:
        return os.path.join(self.state_dir, "bin")

    @property
    def marker(self) -> str:
        return os.path.join(self.state_dir, ".hactl-lab")

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.nodes)
        raise KeyError(f"no lab node {name!r}; the spec has: {known}")

    def hosts_file(self) -> str:
        lines = [
            "127.0.0.1\tlocalhost",
            "::1\tlocalhost ip6-localhost ip6-loopback",
            "ff02::1\tip6-allnodes",
            "ff02::2\tip6-allrouters",
            "",
            f"# hactl lab {self.name}",
        ]
        lines += [f"{node.address}\t{node.name}" for node in self.nodes]
        if self.endpoint_name and self.endpoint_address:
            lines.append(f"{self.endpoint_address}\t{self.endpoint_name}")
        return "\n".join(lines) + "\n"


def uplink_subnet(subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    """The subnet of the nodes' second interface (the one with the default route): the lab
    subnet moved to the other half of 198.18.0.0/15 (198.18.N.0/24 <-> 198.19.N.0/24), so it is
    in the lab range, never the spec's, and the same for the same lab subnet."""
    if subnet.prefixlen < 16:
        raise ValueError(f"lab subnet {subnet} is too large (at most a /16: the uplink takes the other half of {LAB_RANGE})")
    flipped = ipaddress.IPv4Address(int(subnet.network_address) ^ (1 << 16))
    return ipaddress.IPv4Network(f"{flipped}/{subnet.prefixlen}")


def from_cluster(cluster: Cluster) -> Topology:
    """The lab for ``cluster``: every host becomes a node on one bridge in the lab subnet."""
    lab = cluster.lab
    subnet = lab.subnet if lab is not None else ipaddress.IPv4Network("198.18.0.0/24")
    if not subnet.subnet_of(LAB_RANGE):
        raise ValueError(f"lab subnet {subnet} is outside {LAB_RANGE}")
    name = cluster.metadata.name
    state_dir = (lab.state_dir if lab is not None else None) or os.path.join(DEFAULT_STATE_ROOT, name)
    gateway = next(subnet.hosts())
    uplink = uplink_subnet(subnet)
    kube_names = {h.name for h in [*cluster.masters, *cluster.workers]}
    nodes = []
    for host in cluster.all_hosts():
        address = host.address
        if not isinstance(address, ipaddress.IPv4Address) or address not in subnet:
            raise ValueError(f"host {host.name} has address {address}, outside the lab subnet {subnet}")
        if address in {gateway, subnet.network_address, subnet.broadcast_address}:
            raise ValueError(f"host {host.name}: {address} is reserved in {subnet} (bridge/network/broadcast)")
        netns = f"{NETNS_PREFIX}{name}-{host.name}"
        if len(netns) > MAX_NETNS:
            netns = f"{NETNS_PREFIX}{_digest(name, host.name, size=16)}"
        nodes.append(
            Node(
                name=host.name,
                address=address,
                netns=netns,
                veth=VETH_PREFIX + _digest(name, host.name, size=11),
                dir=os.path.join(state_dir, "nodes", host.name),
                ssh_port=(host.ssh.port if host.ssh and host.ssh.port else None) or cluster.ssh.port,
                uplink_address=uplink.network_address + (int(address) - int(subnet.network_address)),
                uplink_veth=UPLINK_VETH_PREFIX + _digest(name, host.name, size=11),
                kube=host.name in kube_names,
            )
        )
    addresses = [n.address for n in nodes]
    if len(set(addresses)) != len(addresses):
        raise ValueError("two lab hosts share an address")
    endpoint_name: str | None = None
    endpoint_address: ipaddress.IPv4Address | None = None
    lb = cluster.load_balancer
    target = lb.vip if lb.vip is not None else lb.hosts[0].address
    if isinstance(target, ipaddress.IPv4Address):
        host_part = cluster.endpoint_host
        try:
            ipaddress.ip_address(host_part)
        except ValueError:
            if host_part not in {n.name for n in nodes}:
                endpoint_name, endpoint_address = host_part, target
        if lb.dns_name and endpoint_name is None and lb.dns_name not in {n.name for n in nodes}:
            endpoint_name, endpoint_address = lb.dns_name, target
    return Topology(
        name=name,
        subnet=subnet,
        gateway=gateway,
        bridge=BRIDGE_PREFIX + _digest(name, size=10),
        state_dir=state_dir,
        nodes=tuple(nodes),
        endpoint_name=endpoint_name,
        endpoint_address=endpoint_address,
        kubernetes_version=cluster.kubernetes.version,
        etcd_version=cluster.etcd.version,
        uplink=uplink,
        uplink_gateway=next(uplink.hosts()),
        uplink_bridge=BRIDGE_PREFIX + "u" + _digest(name, size=9),
    )
