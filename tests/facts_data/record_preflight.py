"""Record the preflight section's output on this machine (root): a node before its join with
a real containerd answering (started here on a temporary socket, killed at the end), with no
runtime, and with a socket that accepts but never answers; an etcd member's and an LB's.

    .venv/bin/python tests/facts_data/record_preflight.py

The snippet is hactl's own (``hactl.facts.preflight``); only the socket path is swapped for the
temporary one. Writes tests/facts_data/preflight/*.out."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from hactl.facts.preflight import CONTAINERD_SOCKET, preflight_for
from hactl.spec.load import load_file

HERE = Path(__file__).resolve().parent / "preflight"
SPEC = Path(__file__).resolve().parents[2] / "specs" / "lab.yaml"


def run(script: str) -> str:
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def main() -> None:
    cluster = load_file(str(SPEC)).cluster
    HERE.mkdir(exist_ok=True)
    node = preflight_for(cluster, ["master"]).script()
    (HERE / "master_fresh_no_runtime.out").write_text(run(node))
    (HERE / "etcd_fresh.out").write_text(run(preflight_for(cluster, ["etcd"]).script()))
    (HERE / "lb_fresh.out").write_text(run(preflight_for(cluster, ["lb"]).script()))
    with tempfile.TemporaryDirectory() as tmp:
        sock = f"{tmp}/containerd.sock"
        proc = subprocess.Popen(["containerd", "--root", f"{tmp}/root", "--state", f"{tmp}/state",
                                 "--address", sock], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                if os.path.exists(sock):
                    break
                time.sleep(0.1)
            time.sleep(0.5)
            out = run(node.replace(CONTAINERD_SOCKET, sock))
            (HERE / "master_fresh_containerd.out").write_text(out.replace(sock, CONTAINERD_SOCKET))
        finally:
            proc.terminate()
            proc.wait(10)
        dead = f"{tmp}/dead.sock"
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(dead)
        listener.listen(1)
        try:
            out = run(node.replace(CONTAINERD_SOCKET, dead))
            (HERE / "master_fresh_silent_socket.out").write_text(out.replace(dead, CONTAINERD_SOCKET))
        finally:
            listener.close()


if __name__ == "__main__":
    main()
