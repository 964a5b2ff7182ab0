"""The lab's network: two bridges, one network namespace + two veths per node, the unreachable route.

``eth0`` of every node is on the lab bridge, in the spec's subnet (the addresses hactl uses);
``eth1`` is on the uplink bridge, in the uplink subnet (:func:`hactl.lab.topology.uplink_subnet`,
also inside 198.18.0.0/15) and carries the node's **default route**, as a real host's second,
"public" interface would: whatever picks "the default interface's address" (kubeadm without a
pinned advertise address) picks an address that is not the spec's. Nothing leaves the machine:
the uplink gateway is the machine's bridge address, the machine does not forward, and the
``unreachable 198.18.0.0/15`` route stays.

Everything goes through iproute2 in batch mode (one ``ip`` process for the whole lab in the
root namespace, one per node inside), so a 200-node lab costs a few hundred milliseconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import subprocess
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from hactl.errors import HactlError
from hactl.lab.topology import BRIDGE_PREFIX, LAB_RANGE, Node, Topology

NETNS_DIR = "/run/netns"
ROUTE_LOCK = "/run/hactl-lab-route.lock"
"""Held while a lab adds its bridge and the unreachable route, and while one that goes away
decides whether it is the last (then it deletes the route): labs of several processes (two
test runs side by side) never leave one of them without the route."""


UPLINK_RULE_PRIORITY = 100
"""Policy rule ``iif <uplink bridge> unreachable``: everything the nodes send through their
default route that is not for the machine itself (local table, priority 0) is refused."""


@contextlib.contextmanager
def _route_lock() -> Iterator[None]:
    with open(ROUTE_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ip_batch(lines: Iterable[str], *, netns: str | None = None, force: bool = False) -> None:
    script = "".join(line + "\n" for line in lines)
    if not script:
        return
    argv = ["ip"] + (["-n", netns] if netns else []) + (["-force"] if force else []) + ["-batch", "-"]
    proc = subprocess.run(argv, input=script, capture_output=True, text=True, check=False)
    if proc.returncode != 0 and not force:
        raise HactlError(f"ip -batch failed: {proc.stderr.strip()}", hint=f"commands were:\n{script}")


def _json(argv: list[str]) -> list[dict[str, object]]:
    proc = subprocess.run(["ip", "-j", *argv], capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    data = json.loads(proc.stdout)
    return data if isinstance(data, list) else []


def links() -> dict[str, dict[str, object]]:
    return {str(link.get("ifname")): link for link in _json(["link", "show"])}


def namespaces() -> set[str]:
    try:
        return set(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return set()


def check_subnet_free(topo: Topology) -> None:
    """Refuse a subnet that another interface (another lab's bridge) already uses."""
    for entry in _json(["-4", "addr", "show"]):
        dev = str(entry.get("ifname"))
        if dev == topo.bridge:
            continue
        if dev == topo.uplink_bridge:
            continue
        infos = entry.get("addr_info")
        for info in infos if isinstance(infos, list) else []:
            local = info.get("local")
            for subnet, what in ((topo.subnet, "lab subnet"), (topo.uplink, "uplink subnet")):
                if local and subnet is not None and ipaddress.ip_address(local) in subnet:
                    raise HactlError(
                        f"{what} {subnet} of lab {topo.name} is already used by {dev} ({local})",
                        hint="pick another lab.subnet inside 198.18.0.0/15 or take the other lab down"
                        " (a lab at 198.18.N.0/24 also takes 198.19.N.0/24 for its nodes' uplink)",
                    )


def create(topo: Topology, nodes: list[Node]) -> None:
    """Bridge, route, and for ``nodes`` whatever of netns/veth is missing; idempotent."""
    existing_links = links()
    existing_ns = namespaces()
    root: list[str] = []
    if topo.bridge not in existing_links:
        root += [
            f"link add {topo.bridge} type bridge",
            f"addr add {topo.gateway}/{topo.subnet.prefixlen} dev {topo.bridge}",
            f"link set {topo.bridge} up",
        ]
    new_uplink = topo.uplink is not None and topo.uplink_bridge not in existing_links
    if new_uplink and topo.uplink is not None:
        root += [
            f"link add {topo.uplink_bridge} type bridge",
            f"addr add {topo.uplink_gateway}/{topo.uplink.prefixlen} dev {topo.uplink_bridge}",
            f"link set {topo.uplink_bridge} up",
            f"rule add iif {topo.uplink_bridge} priority {UPLINK_RULE_PRIORITY} unreachable",
        ]
    root.append(f"route replace unreachable {LAB_RANGE}")
    fresh: list[Node] = []
    uplinked: list[Node] = []
    head = list(root)
    root = []
    for node in nodes:
        if node.netns not in existing_ns:
            root.append(f"netns add {node.netns}")
        if node.veth not in existing_links:
            if node.netns in existing_ns:  # half-made node from an interrupted run
                root.append(f"netns del {node.netns}")
                root.append(f"netns add {node.netns}")
            root.append(f"link add {node.veth} type veth peer name eth0 netns {node.netns}")
            root.append(f"link set {node.veth} master {topo.bridge} up")
            fresh.append(node)
        if node.uplink_veth and (node.uplink_veth not in existing_links or node in fresh):
            # (a node in ``fresh`` lost its old eth1 pair with ``netns del``, or never had one)
            root.append(f"link add {node.uplink_veth} type veth peer name eth1 netns {node.netns}")
            root.append(f"link set {node.uplink_veth} master {topo.uplink_bridge} up")
            uplinked.append(node)
    with _route_lock():
        ip_batch(head)
    if new_uplink:
        _uplink_forwarding(topo.uplink_bridge)
    ip_batch(root)

    def inside(node: Node) -> None:
        lines = []
        if node in fresh:
            lines += [
                "link set lo up",
                f"addr add {node.address}/{topo.subnet.prefixlen} dev eth0",
                "link set eth0 up",
            ]
        if node in uplinked and topo.uplink is not None:
            lines += [
                f"addr add {node.uplink_address}/{topo.uplink.prefixlen} dev eth1",
                "link set eth1 up",
                f"route replace default via {topo.uplink_gateway} dev eth1",
            ]
        ip_batch(lines, netns=node.netns)

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(inside, [n for n in nodes if n in fresh or n in uplinked]))


def _uplink_forwarding(bridge: str) -> None:
    """Forwarding on for the uplink bridge alone, so that the machine answers what the nodes send
    through their default route with ICMP "network unreachable" (the ``iif`` rule) instead of
    dropping it silently (a machine that does not forward sends no ICMP): a node sees ``Network
    is unreachable`` at once, as before it had a default route. The rule comes before the main
    table, so nothing from the uplink is ever forwarded, whatever the machine's ip_forward."""
    with open(f"/proc/sys/net/ipv4/conf/{bridge}/forwarding", "w", encoding="ascii") as handle:
        handle.write("1\n")


def destroy(topo: Topology) -> None:
    """Remove every veth, namespace and the bridge; the route too when no other lab is left."""
    existing_links = links()
    existing_ns = namespaces()
    lines = [f"link del {n.veth}" for n in topo.nodes if n.veth in existing_links]
    lines += [f"link del {n.uplink_veth}" for n in topo.nodes if n.uplink_veth and n.uplink_veth in existing_links]
    lines += [f"netns del {n.netns}" for n in topo.nodes if n.netns in existing_ns]
    for bridge in (topo.bridge, topo.uplink_bridge):
        if bridge and bridge in existing_links:
            lines.append(f"link del {bridge}")
    if topo.uplink_bridge:
        lines.append(f"rule del iif {topo.uplink_bridge} priority {UPLINK_RULE_PRIORITY} unreachable")
    with _route_lock():
        ip_batch(lines, force=True)
        others = [name for name in links() if name.startswith(BRIDGE_PREFIX)]
        if not others:
            subprocess.run(
                ["ip", "route", "del", "unreachable", str(LAB_RANGE)], capture_output=True, check=False
            )


def set_link(node: Node, up: bool) -> None:
    """Plug both of the node's cables in or pull both out (a partitioned node reaches nothing)."""
    state = "up" if up else "down"
    lines = [f"link set {node.veth} {state}"]
    if node.uplink_veth:
        lines.append(f"link set {node.uplink_veth} {state}")
    ip_batch(lines, force=True)


def link_up(node: Node, all_links: dict[str, dict[str, object]]) -> bool | None:
    """True/False for the node's cable, None when it has no veth."""
    link = all_links.get(node.veth)
    if link is None:
        return None
    flags = link.get("flags")
    return isinstance(flags, list) and "UP" in flags
