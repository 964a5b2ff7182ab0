"""``Lab``: the Python API behind ``hactl lab`` and the lab tests."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hactl.errors import HactlError
from hactl.lab import boot, image, netns, standins
from hactl.lab.topology import Node, Topology, from_cluster

if TYPE_CHECKING:
    from hactl.spec.models import Cluster

REQUIRED = {
    "ip": ("/usr/sbin/ip", "iproute2"),
    "unshare": ("/usr/bin/unshare", "util-linux"),
    "nsenter": ("/usr/bin/nsenter", "util-linux"),
    "sshd": ("/usr/sbin/sshd", "openssh-server"),
    "ssh": ("/usr/bin/ssh", "openssh-client"),
    "etcd": ("/usr/bin/etcd", "etcd-server"),
    "etcdctl": ("/usr/bin/etcdctl", "etcd-client"),
    "haproxy": ("/usr/sbin/haproxy", "haproxy"),
    "python3": ("/usr/bin/python3", "python3"),
    "python3-cryptography": ("/usr/lib/python3/dist-packages/cryptography", "python3-cryptography"),
    "python3-yaml": ("/usr/lib/python3/dist-packages/yaml", "python3-yaml"),
    "containerd": ("/usr/bin/containerd", "containerd"),
    "ctr": ("/usr/bin/ctr", "containerd"),
    "faketime": ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1", "faketime"),
    "conntrack": ("/usr/sbin/conntrack", "conntrack"),
    "iptables": ("/usr/sbin/iptables", "iptables"),
}
NODE_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 USER=root LOGNAME=root"
CONTROL_SOCKET = "run/hactl-lab/systemctl.sock"


@dataclass(frozen=True)
class NodeStatus:
    name: str
    address: str
    state: str  # running | stopped | absent
    link: str  # up | down (partitioned) | none
    sshd: bool
    units: tuple[str, ...]
    pid: int | None


def check_host(packages: bool = True) -> None:
    """Root and the Debian packages the lab runs; a clear error (with the apt line) otherwise."""
    if os.geteuid() != 0:
        raise HactlError(
            "hactl lab needs root (it creates network namespaces, mounts and bridges)",
            hint="run it as root, e.g. `sudo hactl lab up -f specs/lab.yaml`",
        )
    missing = sorted({pkg for path, pkg in REQUIRED.values() if not os.path.exists(path)})
    if missing and packages:
        raise HactlError(
            f"the lab needs Debian packages that are not installed: {', '.join(missing)}",
            hint=f"apt-get install -y {' '.join(missing)}",
        )


class Lab:
    """Local test hosts for one spec: ``Lab(cluster).up()`` … ``.down()``."""

    def __init__(
        self, cluster: Cluster, *, knobs: dict[str, object] | None = None,
        unprepared: Sequence[str] = (),
    ) -> None:
        """``unprepared``: names of nodes created as unprepared hosts (no ip_forward, no
        container runtime, see :mod:`hactl.lab.image`); every other node is prepared."""
        self.cluster = cluster
        try:
            self.topo: Topology = from_cluster(cluster)
        except ValueError as exc:
            raise HactlError(f"cannot build a lab from this spec: {exc}") from exc
        self.knobs = knobs or {}
        self.unprepared = frozenset(unprepared)
        for name in self.unprepared:
            self.node(name)
        self.spec_file: str | None = None
        """The spec file this lab came from, when known (the test fixture sets it)."""

    @property
    def name(self) -> str:
        return self.topo.name

    @property
    def key_file(self) -> str:
        return self.topo.key_file

    @property
    def known_hosts(self) -> str:
        return self.topo.known_hosts

    def node(self, name: str) -> Node:
        try:
            return self.topo.node(name)
        except KeyError as exc:
            raise HactlError(str(exc.args[0])) from None

    # -- lifecycle -------------------------------------------------------------------------

    def up(self, timeout: float | None = None) -> None:
        """Create and boot every node that is not running yet; wait for all sshd. Idempotent."""
        check_host()
        topo = self.topo
        netns.check_subnet_free(topo)
        image.prepare_lab(topo)
        files = standins.image_files()
        down = [n for n in topo.nodes if boot.node_pid(n) is None]
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(
                lambda n: image.prepare_node(topo, n, self.knobs, files, n.name not in self.unprepared), down
            ))
        image.write_known_hosts(topo)
        netns.create(topo, list(topo.nodes))
        self._boot(down, timeout)

    def _boot(self, nodes: list[Node], timeout: float | None) -> None:
        limit = timeout if timeout is not None else 60.0 + 0.5 * len(nodes)
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(boot.boot, nodes))
        boot.wait_booted(nodes, limit)
        links = netns.links()
        reachable = [n for n in nodes if netns.link_up(n, links)]
        late = boot.wait_ssh(reachable, limit)
        if late:
            raise HactlError(
                f"sshd did not come up on: {', '.join(n.name for n in late)}",
                hint=f"see {late[0].console} and /var/log/hactl-lab/ssh.service.log in the node",
            )

    def down(self) -> None:
        """Remove everything: processes, namespaces, veths, bridge, route (if last), state dir."""
        check_host(packages=False)
        topo = self.topo
        boot.kill(topo.nodes)
        netns.destroy(topo)
        if os.path.isdir(topo.state_dir):
            if not os.path.exists(topo.marker):
                raise HactlError(
                    f"{topo.state_dir} has no {os.path.basename(topo.marker)} marker; not deleting it",
                    hint="remove it by hand if it is really a lab state dir",
                )
            entries = []
            for sub in ("nodes", "snapshots"):  # node disks and their snapshots, in parallel
                folder = os.path.join(topo.state_dir, sub)
                if os.path.isdir(folder):
                    entries += [os.path.join(folder, e) for e in os.listdir(folder)]
            if entries:
                with ThreadPoolExecutor(max_workers=16) as pool:
                    list(pool.map(shutil.rmtree, entries))
            shutil.rmtree(topo.state_dir)

    # -- disks: snapshot, restore, re-image (hactl/lab/snapshot.py) --------------------------

    def snapshot(self, tag: str, *, boot: bool = True) -> float:
        """Power off every node, copy every node's disk to ``<state dir>/snapshots/<tag>/``,
        boot the nodes that were running again (``boot=False``: leave them off). Returns the
        seconds the copy took."""
        from hactl.lab import snapshot

        check_host()
        return snapshot.snapshot(self, tag, boot_after=boot)

    def restore(self, tag: str, *, timeout: float | None = None) -> float:
        """Power off every node, put every node's disk back as it was at ``snapshot(tag)``,
        plug every cable in, boot every node, wait for sshd. Same topology only. Returns the
        seconds the copy took."""
        from hactl.lab import snapshot

        check_host()
        return snapshot.restore(self, tag, timeout=timeout)

    def snapshots(self) -> list[str]:
        from hactl.lab import snapshot

        return snapshot.tags(self.topo)

    def reimage(self, name: str, timeout: float = 60.0) -> None:
        """Re-install node ``name`` at the same address: a fresh node image with a NEW SSH host
        key, booted; the lab's known_hosts is rewritten with the new key."""
        from hactl.lab import snapshot

        check_host()
        snapshot.reimage(self, name, timeout=timeout)

    def stop(self, name: str) -> None:
        """Power off one node: every process in it dies; its disk (/etc, /var, /root) stays."""
        check_host(packages=False)
        boot.kill([self.node(name)])

    def start(self, name: str, timeout: float = 60.0) -> None:
        """Boot a stopped node again (sshd, then enabled units)."""
        check_host()
        node = self.node(name)
        if boot.node_pid(node) is not None:
            return
        if not os.path.isdir(node.upper("/etc")):
            raise HactlError(f"node {name} was never created", hint="run `hactl lab up` first")
        netns.create(self.topo, [node])
        self._boot([node], timeout)

    def partition(self, name: str) -> None:
        """Cut the node's cable (its veth goes down); processes keep running."""
        check_host(packages=False)
        netns.set_link(self.node(name), up=False)

    def heal(self, name: str) -> None:
        check_host(packages=False)
        netns.set_link(self.node(name), up=True)

    def status(self) -> list[NodeStatus]:
        links = netns.links()

        def one(node: Node) -> NodeStatus:
            pid = boot.node_pid(node)
            link = netns.link_up(node, links)
            sshd = bool(pid and link and _port_open(str(node.address), node.ssh_port))
            units: tuple[str, ...] = ()
            if pid:
                units = _running_units(pid)
            state = "running" if pid else ("stopped" if os.path.isdir(node.dir) else "absent")
            link_text = "none" if link is None else ("up" if link else "down")
            return NodeStatus(node.name, str(node.address), state, link_text, sshd, units, pid)

        with ThreadPoolExecutor(max_workers=16) as pool:
            return list(pool.map(one, self.topo.nodes))

    # -- inside nodes ----------------------------------------------------------------------

    def pid(self, name: str) -> int:
        pid = boot.node_pid(self.node(name))
        if pid is None:
            raise HactlError(f"lab node {name} is not running", hint=f"hactl lab start … {name}")
        return pid

    def run(
        self,
        name: str,
        cmd: str | Sequence[str],
        *,
        input: str | None = None,
        timeout: float | None = 60.0,
        check: bool = False,
        via: str = "nsenter",
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` (argv or a shell string) as root inside node ``name``.

        ``via="nsenter"`` enters the node's namespaces directly (works while partitioned);
        ``via="ssh"`` goes through the node's sshd with the lab key and strict host keys.
        """
        shell = cmd if isinstance(cmd, str) else shlex.join(cmd)
        if via == "ssh":
            node = self.node(name)
            argv = [*self.ssh_argv(name), f"root@{node.address}", shell]
        else:
            argv = [
                "nsenter", "-t", str(self.pid(name)), "-m", "-u", "-i", "-n", "-p", "--wd=/root",
                "/usr/bin/env", "-i", *NODE_ENV.split(), "/bin/sh", "-c", shell,
            ]
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise HactlError(
                f"`{shell}` exited {proc.returncode}: {proc.stderr.strip()[-2000:]}", host=name
            )
        return proc

    def ssh_argv(self, name: str) -> list[str]:
        node = self.node(name)
        return [
            "ssh", "-F", "/dev/null", "-i", self.key_file, "-p", str(node.ssh_port),
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
        ]

    def put(self, name: str, path: str, data: str | bytes, mode: int = 0o644) -> None:
        """Write a file inside a running node (through /proc/PID/root, owned by root)."""
        if not path.startswith("/"):
            raise ValueError(f"{path}: absolute path expected")
        real = f"/proc/{self.pid(name)}/root{path}"
        os.makedirs(os.path.dirname(real), exist_ok=True)
        with open(real, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
        os.chmod(real, mode)

    def read(self, name: str, path: str) -> str:
        with open(f"/proc/{self.pid(name)}/root{path}", encoding="utf-8") as handle:
            return handle.read()

    def inject(self, name: str, condition: str, **params: object) -> None:
        """Put a host condition on node ``name`` (:mod:`hactl.lab.inject`: swap, ip-forward,
        port, kubelet-version, clock-skew)."""
        from hactl.lab import inject

        inject.inject(self, name, condition, **params)

    def clear(self, name: str, condition: str) -> None:
        """Take a condition :meth:`inject` put on node ``name`` off again."""
        from hactl.lab import inject

        inject.clear(self, name, condition)

    def systemctl(self, name: str, *args: str, timeout: float = 120.0) -> tuple[int, str, str]:
        """Talk to the node's supervisor directly (no process spawned in the node)."""
        from hactl.lab.standins.systemctl import call

        return call(list(args), f"/proc/{self.pid(name)}/root/{CONTROL_SOCKET}", timeout=timeout)


def _port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def _running_units(pid: int) -> tuple[str, ...]:
    from hactl.lab.standins.systemctl import call

    for _ in range(3):
        try:
            _, out, _ = call(
                ["list-units", "--state=running"], f"/proc/{pid}/root/{CONTROL_SOCKET}", timeout=5.0
            )
            return tuple(line.split()[0] for line in out.splitlines() if line.strip())
        except OSError:
            time.sleep(0.05)
    return ()
