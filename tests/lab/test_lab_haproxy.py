"""HAProxy on the LB node, run by the stand-in systemctl from Debian's own unit (-Ws master-worker),
reloaded gracefully: the master keeps its PID, a new worker takes over, open connections live on."""

from __future__ import annotations

import socket
import time
from typing import Any

CONFIG = """\
global
    chroot /var/lib/haproxy
    stats socket /run/haproxy/admin.sock mode 660 level admin
    user haproxy
    group haproxy

defaults
    mode tcp
    timeout connect 5s
    timeout client 35s
    timeout server 35s

frontend kube-apiserver
    bind :6443
    default_backend masters

backend masters
    balance roundrobin
{servers}
"""


def _workers(lab: Any, master_pid: str) -> set[str]:
    out = lab.run("lb01", f"ps -o pid= --ppid {master_pid}").stdout
    return set(out.split())


def _wait(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_haproxy_runs_under_systemctl_and_reloads_gracefully(lab_factory: Any) -> None:
    lab = lab_factory()
    servers = "\n".join(
        f"    server {m} {lab.node(m).address}:6443 check" for m in ("master01", "master02", "master03")
    )
    lab.put("lb01", "/etc/haproxy/haproxy.cfg", CONFIG.format(servers=servers))
    # a backend on master01 (plain HTTP is enough for TCP passthrough)
    lab.run("master01", "setsid python3 -m http.server --bind 0.0.0.0 6443 >/tmp/http.log 2>&1 < /dev/null &", check=True)
    _wait(lambda: lab.run("master01", "bash -c 'exec 3<>/dev/tcp/127.0.0.1/6443'").returncode == 0)

    start = lab.run("lb01", "systemctl start haproxy && systemctl is-active haproxy", via="ssh")
    assert start.returncode == 0 and start.stdout == "active\n", start.stderr
    master = lab.run("lb01", "systemctl show -p MainPID --value haproxy").stdout.strip()
    cmdl = lab.read("lb01", f"/proc/{master}/cmdline")
    assert cmdl.split("\0")[:2] == ["/usr/sbin/haproxy", "-Ws"], (master, cmdl, lab.run("lb01", "ps -eo pid,ppid,stat,args").stdout, lab.read("lb01", f"/proc/{master}/status")[:300])
    _wait(lambda: len(_workers(lab, master)) == 1)
    old_workers = _workers(lab, master)

    lb = str(lab.node("lb01").address)
    held = socket.create_connection((lb, 6443), timeout=5)  # open before the reload
    try:
        reload = lab.run("lb01", "systemctl reload haproxy", via="ssh")
        assert reload.returncode == 0, reload.stderr
        assert lab.run("lb01", "systemctl show -p MainPID --value haproxy").stdout.strip() == master
        _wait(lambda: bool(_workers(lab, master) - old_workers))
        # the old worker still serves the connection it held
        held.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert held.recv(64).startswith(b"HTTP/1.0 200")
    finally:
        held.close()
    _wait(lambda: not (_workers(lab, master) & old_workers))
    with socket.create_connection((lb, 6443), timeout=5) as fresh:
        fresh.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert fresh.recv(64).startswith(b"HTTP/1.0 200")

    # a broken config fails the reload (ExecReload runs `haproxy -c` first) and changes nothing
    lab.put("lb01", "/etc/haproxy/haproxy.cfg", "global\n    no-such-keyword\n")
    broken = lab.run("lb01", "systemctl reload haproxy")
    assert broken.returncode == 1 and "haproxy.service" in broken.stderr
    assert lab.run("lb01", "systemctl is-active haproxy").stdout == "active\n"
    assert lab.run("lb01", "systemctl show -p MainPID --value haproxy").stdout.strip() == master

    stop = lab.run("lb01", "systemctl stop haproxy; systemctl is-active haproxy")
    assert stop.stdout == "inactive\n"
    assert lab.run("lb01", "pgrep -x haproxy").returncode == 1
