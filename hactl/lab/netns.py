"""The lab's network: one bridge, one network namespace + veth per node, the unreachable route.

Everything goes through iproute2 in batch mode (one ``ip`` process for the whole lab in the
root namespace, one per node inside), so a 200-node lab costs a few hundred milliseconds.
"""

from __future__ import annotations

import contextlib
import fcntl
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
        infos = entry.get("addr_info")
        for info in infos if isinstance(infos, list) else []:
            local = info.get("local")
            if local and _in(local, topo):
                raise HactlError(
                    f"lab subnet {topo.subnet} is already used by {dev} ({local})",
                    hint="pick another lab.subnet inside 198.18.0.0/15 or take the other lab down",
                )


def _in(address: str, topo: Topology) -> bool:
    import ipaddress

    return ipaddress.ip_address(address) in topo.subnet


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
    root.append(f"route replace unreachable {LAB_RANGE}")
    fresh: list[Node] = []
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
    with _route_lock():
        ip_batch(head)
    ip_batch(root)

    def inside(node: Node) -> None:
        ip_batch(
            [
                "link set lo up",
                f"addr add {node.address}/{topo.subnet.prefixlen} dev eth0",
                "link set eth0 up",
            ],
            netns=node.netns,
        )

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(inside, fresh))


def destroy(topo: Topology) -> None:
    """Remove every veth, namespace and the bridge; the route too when no other lab is left."""
    existing_links = links()
    existing_ns = namespaces()
    lines = [f"link del {n.veth}" for n in topo.nodes if n.veth in existing_links]
    lines += [f"netns del {n.netns}" for n in topo.nodes if n.netns in existing_ns]
    if topo.bridge in existing_links:
        lines.append(f"link del {topo.bridge}")
    with _route_lock():
        ip_batch(lines, force=True)
        others = [name for name in links() if name.startswith(BRIDGE_PREFIX)]
        if not others:
            subprocess.run(
                ["ip", "route", "del", "unreachable", str(LAB_RANGE)], capture_output=True, check=False
            )


def set_link(node: Node, up: bool) -> None:
    ip_batch([f"link set {node.veth} {'up' if up else 'down'}"])


def link_up(node: Node, all_links: dict[str, dict[str, object]]) -> bool | None:
    """True/False for the node's cable, None when it has no veth."""
    link = all_links.get(node.veth)
    if link is None:
        return None
    flags = link.get("flags")
    return isinstance(flags, list) and "UP" in flags
