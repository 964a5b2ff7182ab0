"""Snapshots of a lab's disks, and re-imaging one node (what ``Lab.snapshot/restore/reimage`` do).

A node's disk is what survives its power-off (docs/lab.md, "What a node is"): the upper
(writable) dirs of its /etc and /var overlays (whiteouts and overlay xattrs included), its
/root and its /tmp. ``snapshot`` powers every node off (as ``lab stop`` does: SIGKILL to
PID 1), copies each disk to ``<state dir>/snapshots/<tag>/<node>/`` and boots the nodes that
were running; ``restore`` powers every node off, replaces each disk with the snapshot's copy,
plugs every cable back in and boots every node: like restoring the disks of a set of VMs. What
is not on a disk starts fresh, as after a power cut: /run, processes, the kernel's state. The
clocks move on (leases and tokens age), as they do after a VM's restore.

The copy is ``cp -a --reflink=auto``: a reflink (shared blocks, instant) on a file system that
has them (btrfs, XFS), a plain copy otherwise (ext4). Never hard links: the node would write
through them into the snapshot.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from hactl.errors import HactlError
from hactl.lab import boot, image, netns, standins
from hactl.lab.topology import Node, Topology

if TYPE_CHECKING:
    from hactl.lab.lab import Lab

DISK = ("etc.upper", "var.upper", "root", "tmp")
"""A node's persistent state, relative to its node dir."""
WORK = ("etc.work", "var.work")
"""Overlay work dirs: scratch space of a mounted overlay, emptied on restore."""
MANIFEST = "snapshot.json"
TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
COPY = ["cp", "-a", "--reflink=auto"]


def snapshots_dir(topo: Topology) -> str:
    return os.path.join(topo.state_dir, "snapshots")


def snapshot_dir(topo: Topology, tag: str) -> str:
    if not TAG_RE.fullmatch(tag):
        raise HactlError(
            f"invalid snapshot tag {tag!r}",
            hint="letters, digits, '.', '_' and '-' (at most 64, not starting with '.' or '-')",
        )
    return os.path.join(snapshots_dir(topo), tag)


def tags(topo: Topology) -> list[str]:
    """The lab's snapshots (complete ones: their manifest is written last)."""
    root = snapshots_dir(topo)
    if not os.path.isdir(root):
        return []
    return sorted(t for t in os.listdir(root) if os.path.isfile(os.path.join(root, t, MANIFEST)))


def _nodes_map(topo: Topology) -> dict[str, str]:
    return {n.name: f"{n.address}:{n.ssh_port}" for n in topo.nodes}


def _never_created(topo: Topology) -> list[str]:
    return [n.name for n in topo.nodes if not os.path.isdir(n.upper("/etc"))]


def _copy_disk(src_dir: str, dst_dir: str) -> None:
    """Copy a node's disk parts from ``src_dir`` into the (new, empty) ``dst_dir``."""
    os.makedirs(dst_dir, mode=0o700, exist_ok=True)
    parts = [os.path.join(src_dir, p) for p in DISK if os.path.lexists(os.path.join(src_dir, p))]
    if not parts:
        return
    proc = subprocess.run([*COPY, *parts, dst_dir + "/"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HactlError(f"copying {src_dir} to {dst_dir} failed: {proc.stderr.strip()[-2000:]}")


def _parallel(fn: Callable[[Node], None], items: list[Node]) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(fn, items))


def snapshot(lab: Lab, tag: str, *, boot_after: bool = True) -> float:
    """Power off every node, copy every node's disk into ``snapshots/<tag>/`` (replacing an
    older snapshot of that tag), then boot the nodes that were running (unless ``boot_after``
    is false). Returns the seconds the copy took."""
    topo = lab.topo
    dest = snapshot_dir(topo, tag)
    missing = _never_created(topo)
    if missing:
        raise HactlError(f"cannot snapshot lab {topo.name}: nodes never created: {', '.join(missing)}",
                         hint="run `hactl lab up` first")
    running = [n for n in topo.nodes if boot.node_pid(n) is not None]
    boot.kill(topo.nodes)
    partial = dest + ".partial"
    for old in (partial, dest):
        if os.path.lexists(old):
            shutil.rmtree(old)
    os.makedirs(partial, mode=0o700)
    started = time.monotonic()
    _parallel(lambda n: _copy_disk(n.dir, os.path.join(partial, n.name)), list(topo.nodes))
    manifest = {"tag": tag, "lab": topo.name, "taken_at": time.time(), "nodes": _nodes_map(topo)}
    with open(os.path.join(partial, MANIFEST), "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2)
    os.rename(partial, dest)
    copied = time.monotonic() - started
    if boot_after and running:
        lab._boot(running, None)
    return copied


def restore(lab: Lab, tag: str, *, timeout: float | None = None) -> float:
    """Power off every node, put back each node's disk from ``snapshots/<tag>/``, plug every
    cable back in, boot every node and wait for its sshd. Refuses a snapshot of another
    topology. Returns the seconds the disk copy took."""
    topo = lab.topo
    src = snapshot_dir(topo, tag)
    manifest_file = os.path.join(src, MANIFEST)
    if not os.path.isfile(manifest_file):
        have = tags(topo)
        raise HactlError(f"lab {topo.name} has no snapshot {tag!r}",
                         hint=f"snapshots: {', '.join(have)}" if have else "take one with Lab.snapshot(tag)")
    with open(manifest_file, encoding="utf-8") as handle:
        saved: dict[str, str] = json.load(handle)["nodes"]
    now = _nodes_map(topo)
    if saved != now:
        added = sorted(set(now) - set(saved))
        removed = sorted(set(saved) - set(now))
        moved = sorted(n for n in set(now) & set(saved) if now[n] != saved[n])
        what = "; ".join(f"{label}: {', '.join(names)}" for label, names in
                         (("not in the snapshot", added), ("only in the snapshot", removed),
                          ("address or port changed", moved)) if names)
        raise HactlError(f"snapshot {tag!r} of lab {topo.name} was taken of another topology ({what})",
                         hint="restore works on the same nodes only: take a new snapshot")
    boot.kill(topo.nodes)
    started = time.monotonic()
    _parallel(lambda n: _replace_disk(n, os.path.join(src, n.name)), list(topo.nodes))
    copied = time.monotonic() - started
    image.write_known_hosts(topo)  # the host keys are the snapshot's again
    netns.create(topo, list(topo.nodes))
    links = netns.links()
    for node in topo.nodes:
        if netns.link_up(node, links) is False:
            netns.set_link(node, up=True)
    lab._boot(list(topo.nodes), timeout)
    return copied


def _wipe(node: Node) -> None:
    for part in (*DISK, *WORK):
        path = os.path.join(node.dir, part)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)


def _replace_disk(node: Node, src: str) -> None:
    _wipe(node)
    _copy_disk(src, node.dir)
    for part in WORK:
        os.makedirs(os.path.join(node.dir, part), exist_ok=True)


def reimage(lab: Lab, name: str, timeout: float = 60.0) -> None:
    """The host re-installed at the same address: power off, wipe its disk, write a fresh node
    image (as ``up`` does for a new node: a NEW SSH host key), boot it and wait for sshd. The
    lab's known_hosts file is rewritten with the new key (as an operator does once the new key
    is verified out of band)."""
    topo = lab.topo
    node = lab.node(name)
    if not os.path.isdir(node.upper("/etc")):
        raise HactlError(f"node {name} was never created", hint="run `hactl lab up` first")
    boot.kill([node])
    _wipe(node)
    image.prepare_node(topo, node, lab.knobs, standins.image_files(), node.name not in lab.unprepared)
    image.write_known_hosts(topo)
    netns.create(topo, [node])
    if netns.link_up(node, netns.links()) is False:
        netns.set_link(node, up=True)
    lab._boot([node], timeout)
