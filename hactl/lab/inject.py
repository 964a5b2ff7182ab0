"""Inject a host condition into one lab node, and clear it again.

Each condition looks, from inside the node (over ssh, to kubeadm, to hactl's probe), as it looks
on a real host; nothing outside the node changes:

``swap``
    A file bound over the node's ``/proc/swaps`` in the node's mount namespace, in the kernel's
    format (``Filename  Type  Size  Used  Priority`` + one ``/swap.img`` line). ``swapon --show``
    and every reader of /proc/swaps see it; ``/proc/meminfo`` (``free``) still shows no swap.
``ip-forward``
    ``net.ipv4.ip_forward=0`` in the node's network namespace (the real sysctl); cleared by
    writing back the value it had.
``port`` (``port=2380``)
    A TCP listener on ``0.0.0.0:<port>`` started inside the node (all its namespaces, so
    ``ss -ltnp`` in the node names it: ``python3``); killed by its PID at clear.
``kubelet-version`` (``version="1.29.0"``)
    ``kubelet --version`` answers ``Kubernetes v<version>``: a wrapper bound over the node's
    ``/usr/local/sbin/kubelet`` (mount namespace only); other invocations run the stand-in as
    before. (The stand-ins read their version from /etc/hactl-lab/versions, shared by kubeadm and
    kubelet, so the file cannot make only the kubelet wrong.) A kubelet already running keeps
    reporting the lab's version in its Node status.
``clock-skew`` (``seconds=120``, may be negative)
    Debian's libfaketime for every ssh session of the node: the node's sshd_config gets
    ``SetEnv LD_PRELOAD=…/libfaketime.so.1 FAKETIME=+120 FAKETIME_DONT_FAKE_MONOTONIC=1`` and
    sshd is reloaded, so every command run over ssh (hactl's probe, ``date``, kubeadm run by
    hactl) sees the clock 120 s ahead. Not skewed: processes started by the node's init
    (services), and Go programs (etcd, containerd: they read the clock through the vDSO, not
    libc). (Node-wide, through ``/etc/ld.so.preload`` + ``/etc/faketimerc``, libfaketime was
    loaded into sshd itself, and every connection failed: ``client_loop: send disconnect: Broken
    pipe``, 15 of 15.)

What an injection left is recorded in ``<node dir>/inject/<condition>.json`` on the machine, so
``clear`` works from another process. A node that is stopped and started loses ``swap``,
``port`` and ``kubelet-version`` (mounts and processes) but keeps ``clock-skew`` (its
sshd_config); ``ip-forward`` comes back from the node's sysctl.d at boot.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from typing import TYPE_CHECKING, Any

from hactl.errors import HactlError

if TYPE_CHECKING:
    from hactl.lab.lab import Lab

CONDITIONS = ("swap", "ip-forward", "port", "kubelet-version", "clock-skew")
IN_NODE_DIR = "/run/hactl-lab/inject"
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
SSHD_CONFIG = "/etc/ssh/sshd_config"
SKEW_MARK = "# hactl lab inject clock-skew\n"
KUBELET = "/usr/local/sbin/kubelet"

SWAPS_HEADER = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"

LISTENER = """\
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.close()
"""


def swaps_line(path: str = "/swap.img", size_kib: int = 4194300, used_kib: int = 0, priority: int = -2,
               kind: str = "file") -> str:
    """One /proc/swaps entry as the kernel prints it (``swap_show`` in mm/swapfile.c)."""
    pad = 40 - len(path) if len(path) < 40 else 1
    kind_text = "file\t" if kind == "file" else "partition"
    tab = "\t"
    size_pad = tab if size_kib < 10000000 else ""
    used_pad = tab if used_kib < 10000000 else ""
    return f"{path}{' ' * pad}{kind_text}{tab}{size_kib}{tab}{size_pad}{used_kib}{tab}{used_pad}{priority}\n"


def _state_file(lab: Lab, node: str, condition: str) -> str:
    return os.path.join(lab.node(node).dir, "inject", f"{condition}.json")


def _save(lab: Lab, node: str, condition: str, state: dict[str, Any]) -> None:
    path = _state_file(lab, node, condition)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(state, handle)


def _load(lab: Lab, node: str, condition: str) -> dict[str, Any] | None:
    try:
        with open(_state_file(lab, node, condition), encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    return data if isinstance(data, dict) else None


def _forget(lab: Lab, node: str, condition: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_state_file(lab, node, condition))


def _nsenter(lab: Lab, node: str, flags: list[str], argv: list[str]) -> subprocess.CompletedProcess[str]:
    full = ["nsenter", "-t", str(lab.pid(node)), *flags, *argv]
    proc = subprocess.run(full, capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise HactlError(f"`{' '.join(full)}` exited {proc.returncode}: {proc.stderr.strip()}", host=node)
    return proc


def _mounted(lab: Lab, node: str, target: str) -> bool:
    with open(f"/proc/{lab.pid(node)}/mountinfo", encoding="utf-8") as handle:
        return any(line.split()[4] == target for line in handle)


def _bind(lab: Lab, node: str, source: str, target: str) -> None:
    _nsenter(lab, node, ["-m", "-p"], ["mount", "--bind", source, target])


def _unbind(lab: Lab, node: str, target: str) -> None:
    while _mounted(lab, node, target):
        _nsenter(lab, node, ["-m", "-p"], ["umount", target])


def inject(lab: Lab, node: str, condition: str, **params: Any) -> None:
    """Put ``condition`` (one of :data:`CONDITIONS`) on lab node ``node``. Injecting a condition
    that is already on clears it first (new parameters replace the old ones)."""
    if condition not in CONDITIONS:
        raise HactlError(f"unknown condition {condition!r}", hint=f"one of: {', '.join(CONDITIONS)}")
    if _load(lab, node, condition) is not None:
        clear(lab, node, condition)
    if condition == "swap":
        path = str(params.get("path", "/swap.img"))
        text = SWAPS_HEADER + swaps_line(path, int(params.get("size_kib", 4194300)))
        lab.put(node, f"{IN_NODE_DIR}/swaps", text, 0o444)
        _bind(lab, node, f"{IN_NODE_DIR}/swaps", "/proc/swaps")
        _save(lab, node, condition, {"path": path})
    elif condition == "ip-forward":
        # (read in the node's namespace: /proc/sys/net shows the network namespace of the reader)
        before = _nsenter(lab, node, ["-n"], ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip()
        _nsenter(lab, node, ["-n"], ["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])
        _save(lab, node, condition, {"before": before})
    elif condition == "port":
        _save(lab, node, condition, _listen(lab, node, int(params.get("port", 2380))))
    elif condition == "kubelet-version":
        version = str(params["version"]).lstrip("v")
        real = lab.read(node, KUBELET)
        wrapper = (
            "#!/bin/sh\n# hactl lab inject kubelet-version\n"
            f'if [ "$#" = 1 ] && [ "$1" = "--version" ]; then echo "Kubernetes v{version}"; exit 0; fi\n'
            + "".join(line for line in real.splitlines(keepends=True) if not line.startswith("#!"))
        )
        lab.put(node, f"{IN_NODE_DIR}/kubelet", wrapper, 0o755)
        _bind(lab, node, f"{IN_NODE_DIR}/kubelet", KUBELET)
        _save(lab, node, condition, {"version": version})
    elif condition == "clock-skew":
        seconds = int(params.get("seconds", 120))
        original = lab.read(node, SSHD_CONFIG)
        line = (f"SetEnv LD_PRELOAD={FAKETIME_LIB} FAKETIME={seconds:+d} FAKETIME_DONT_FAKE_MONOTONIC=1\n")
        _save(lab, node, condition, {"seconds": seconds, "sshd_config": original})
        lab.put(node, SSHD_CONFIG, original + SKEW_MARK + line, 0o644)
        _reload_sshd(lab, node)


_LISTENERS: dict[int, subprocess.Popen[str]] = {}
"""The nsenter processes of the listeners this process started (waited for at clear)."""


def _reload_sshd(lab: Lab, node: str) -> None:
    """``systemctl reload ssh`` (sshd re-reads its configuration on SIGHUP; sessions stay)."""
    rc, out, err = lab.systemctl(node, "reload", "ssh.service")
    if rc != 0:
        raise HactlError(f"systemctl reload ssh.service failed: {err or out}", host=node)
    time.sleep(0.3)  # sshd re-executes itself on SIGHUP before it accepts again


def _listen(lab: Lab, node: str, port: int) -> dict[str, Any]:
    argv = ["nsenter", "-t", str(lab.pid(node)), "-m", "-u", "-i", "-n", "-p", "--wd=/",
            "/usr/bin/python3", "-S", "-c", LISTENER, str(port)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "listening":
        err = line + proc.stdout.read()
        proc.stdout.close()
        proc.wait(timeout=10)
        raise HactlError(f"could not listen on port {port}: {err.strip()[-500:]}", host=node)
    proc.stdout.close()
    _LISTENERS[proc.pid] = proc
    child = None
    for _ in range(50):
        try:
            with open(f"/proc/{proc.pid}/task/{proc.pid}/children", encoding="utf-8") as handle:
                kids = handle.read().split()
        except OSError:
            kids = []
        if kids:
            child = int(kids[0])
            break
        time.sleep(0.02)
    if child is None:
        raise HactlError(f"the listener on port {port} has no process", host=node)
    return {"port": port, "pid": child, "nsenter_pid": proc.pid}


def clear(lab: Lab, node: str, condition: str) -> None:
    """Take ``condition`` off ``node`` again (nothing to do when it is not on)."""
    if condition not in CONDITIONS:
        raise HactlError(f"unknown condition {condition!r}", hint=f"one of: {', '.join(CONDITIONS)}")
    state = _load(lab, node, condition)
    if state is None:
        return
    if condition == "swap":
        _unbind(lab, node, "/proc/swaps")
    elif condition == "ip-forward":
        _nsenter(lab, node, ["-n"], ["sysctl", "-q", "-w", f"net.ipv4.ip_forward={state.get('before', '1')}"])
    elif condition == "port":
        for key in ("pid", "nsenter_pid"):
            pid = int(state[key])
            if _is_ours(pid, int(state["port"])):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _reap(pid)
    elif condition == "kubelet-version":
        _unbind(lab, node, KUBELET)
    elif condition == "clock-skew":
        current = lab.read(node, SSHD_CONFIG)
        lab.put(node, SSHD_CONFIG, current.split(SKEW_MARK)[0] if SKEW_MARK in current else state["sshd_config"],
                0o644)
        _reload_sshd(lab, node)
    _forget(lab, node, condition)


def _is_ours(pid: int, port: int) -> bool:
    """The recorded PID still runs our listener (not a PID reused since)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            words = handle.read().split(b"\0")
    except OSError:
        return False
    return str(port).encode() in words and any(b"socket.socket" in w for w in words)


def _reap(pid: int) -> None:
    proc = _LISTENERS.pop(pid, None)
    if proc is not None:
        proc.wait(timeout=10)
        return
    for _ in range(100):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not os.path.exists(f"/proc/{pid}") or _zombie(pid):
            return
        time.sleep(0.02)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def active(lab: Lab, node: str) -> dict[str, dict[str, Any]]:
    """The conditions on ``node`` that :func:`inject` recorded, with their parameters."""
    found = {}
    for condition in CONDITIONS:
        state = _load(lab, node, condition)
        if state is not None:
            found[condition] = state
    return found
