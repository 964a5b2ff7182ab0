"""Hosts the cluster still has and the spec no longer names: a **departing host**.

A Node the API lists that is neither a master nor a worker of the spec, and (stacked etcd) a
member of kubeadm's etcd that no master of the spec owns, belong to a machine taken out of the
spec (or joined by hand). hactl removes them (:mod:`hactl.diff`): the Node is drained and
deleted, the stacked member is removed through another master, and the machine itself is
reset (``kubeadm reset -f``) when hactl can reach it.

Where: at the address the cluster records for it — the Node's first ``InternalIP``, else the
host of the member's peer URL — with the spec's ``ssh`` defaults (a departing host has no entry
of its own; its SSH host key must still be in the known_hosts file, as it was while it was in
the spec). A host that cannot be reached is still removed from the cluster (Node, member); the
plan says that it was not reset.

Pure: computed from the spec and the API's view, so the probe (which connects to the departing
hosts in a second round) and the diff (which plans their removal) agree on who departs.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from hactl.facts.model import ClusterView, EtcdMember, NodeInfo
from hactl.spec.models import Cluster, Host


@dataclass(frozen=True)
class Departing:
    name: str
    """The Node's name, else the member's name, else (a member that never started) its id."""
    address: str | None
    """Where hactl reaches the machine (None: the cluster records no address)."""
    node: NodeInfo | None = None
    """Its Node, when the API lists one."""
    member: EtcdMember | None = None
    """Stacked etcd: its member of kubeadm's etcd, when the member list has one."""
    clash: str | None = None
    """The spec host whose address this machine's address also is (then it is refused: the
    machine may be that host under another name)."""

    @property
    def control_plane(self) -> bool:
        return (self.node is not None and self.node.control_plane) or self.member is not None

    @property
    def role(self) -> str:
        return "master" if self.control_plane else "worker"

    def host(self) -> Host:
        """A :class:`Host` to connect to (the spec's ``ssh`` defaults apply); only when
        :attr:`address` is known. Built without the spec's name rule: a Node's name may be any
        DNS subdomain (it is only a label here)."""
        assert self.address is not None
        return Host.model_construct(name=self.name, address=ipaddress.ip_address(self.address),
                                    ssh=None)


def url_host(url: str) -> str | None:
    """``https://198.18.0.13:2380`` → ``198.18.0.13`` (None when it is no IP address)."""
    try:
        host = urlsplit(url).hostname
        return str(ipaddress.ip_address(host)) if host else None
    except ValueError:
        return None


def member_of(cluster: Cluster, host: Host, members: tuple[EtcdMember, ...]) -> EtcdMember | None:
    """Stacked etcd: the member of spec master ``host`` — by name, else (a member added by a
    join that stopped before it started) by the address of its peer URL."""
    by_name = next((m for m in members if m.name == host.name), None)
    if by_name is not None:
        return by_name
    address = str(host.address)
    return next((m for m in members if not m.started
                 and any(url_host(u) == address for u in m.peer_urls)), None)


def departing(cluster: Cluster, api: ClusterView | None) -> tuple[Departing, ...]:
    """Every departing host, sorted by name (empty when the API gave no view)."""
    if api is None:
        return ()
    wanted = {h.name for h in (*cluster.masters, *cluster.workers)}
    addresses = {str(h.address): h.name for h in cluster.all_hosts()}
    found: dict[str, Departing] = {}
    for node in api.nodes:
        if node.name not in wanted:
            found[node.name] = Departing(node.name, node.internal_ips[0] if node.internal_ips else None,
                                         node=node)
    if cluster.etcd.topology == "stacked" and api.stacked_members:
        owned = {m.id for h in cluster.masters
                 if (m := member_of(cluster, h, api.stacked_members)) is not None}
        for member in api.stacked_members:
            if member.id in owned:
                continue
            name = member.name or member.id
            address = next((a for u in member.peer_urls if (a := url_host(u))), None)
            before = found.get(name)
            if before is not None:
                found[name] = Departing(name, before.address or address, node=before.node,
                                        member=member)
            else:
                found[name] = Departing(name, address, member=member)
    out = []
    for name in sorted(found):
        d = found[name]
        clash = addresses.get(d.address) if d.address is not None else None
        out.append(Departing(d.name, d.address, d.node, d.member, clash) if clash else d)
    return tuple(out)
