"""Power for lab nodes: boot a node's PID 1, find it by its recorded PID, kill it, wait for sshd."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Iterable

from hactl.errors import HactlError
from hactl.lab.image import REPO_ROOT
from hactl.lab.topology import Node

PYTHON = "/usr/bin/python3"


def node_pid(node: Node) -> int | None:
    """PID of the node's init if it is running (checked against its command line)."""
    try:
        with open(node.pid_file, encoding="utf-8") as handle:
            pid = int(handle.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read()
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError):
        return None
    if b"hactl.lab.nodeinit" not in cmdline or node.config_file.encode() not in cmdline or state == "Z":
        return None
    return pid


def boot(node: Node) -> None:
    """Start the node's init in its namespaces, detached from us (it outlives this process)."""
    if node_pid(node) is not None:
        return
    if os.path.exists(node.pid_file):
        os.unlink(node.pid_file)
    argv = [
        "setsid", "-f",
        "nsenter", f"--net=/run/netns/{node.netns}",
        "unshare", "--mount", "--uts", "--ipc", "--pid", "--fork", "--propagation", "private",
        PYTHON, "-m", "hactl.lab.nodeinit", node.config_file,
    ]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": REPO_ROOT, "LANG": "C.UTF-8"}
    with open(node.console, "ab") as console:
        subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=console, stderr=console, env=env, check=True)


def wait_booted(nodes: Iterable[Node], timeout: float) -> None:
    """Wait until every node recorded its PID (its namespaces exist)."""
    pending = list(nodes)
    deadline = time.monotonic() + timeout
    while pending:
        pending = [n for n in pending if node_pid(n) is None]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise HactlError(
                f"lab nodes did not boot: {', '.join(n.name for n in pending)}",
                hint=f"see {pending[0].console}",
            )
        time.sleep(0.02)


def kill(nodes: Iterable[Node], timeout: float = 20.0) -> None:
    """Power off: SIGKILL each node's PID 1 (the kernel then kills its whole PID namespace)."""
    victims = [(n, pid) for n in nodes if (pid := node_pid(n)) is not None]
    for _, pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    for node, pid in victims:
        while os.path.exists(f"/proc/{pid}") and node_pid(node) == pid:
            if time.monotonic() > deadline:
                raise HactlError(f"node {node.name} (PID {pid}) did not die after SIGKILL")
            time.sleep(0.01)
        # the namespace is gone only when the last process in it is
        while _ns_members(pid):
            if time.monotonic() > deadline:
                raise HactlError(f"processes of node {node.name} did not die after SIGKILL")
            time.sleep(0.01)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(node.pid_file)


def _ns_members(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}") and _state(pid) not in {"Z", "X", ""}


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def wait_ssh(nodes: Iterable[Node], timeout: float) -> list[Node]:
    """Wait until each node's sshd accepts TCP connections; returns the nodes that never did."""
    pending = {n.name: n for n in nodes}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        sel = selectors.DefaultSelector()
        socks: list[socket.socket] = []
        for node in pending.values():
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.connect_ex((str(node.address), node.ssh_port))
            sel.register(sock, selectors.EVENT_WRITE, node)
            socks.append(sock)
        round_end = min(deadline, time.monotonic() + 0.5)
        while time.monotonic() < round_end and pending:
            for key, _ in sel.select(max(0.0, round_end - time.monotonic())):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                if ready.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    pending.pop(key.data.name, None)
                sel.unregister(ready)
            if not sel.get_map():
                break
        for sock in socks:
            sock.close()
        sel.close()
        if pending:
            time.sleep(0.05)
    return list(pending.values())
