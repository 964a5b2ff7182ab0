"""The ``systemctl`` stand-in (client): forwards its arguments to the node's supervisor.

Runs inside lab nodes under Debian's ``/usr/bin/python3`` (shim in /usr/local/sbin): standard
library only. The service manager itself is :mod:`hactl.lab.supervisor`, running as the node's
PID 1; the verbs are implemented in :mod:`hactl.lab.control`. Outside a lab node (no supervisor
socket) it fails like the real systemctl in a container without systemd.
"""

from __future__ import annotations

import json
import os
import socket
import sys

SOCKET = "/run/hactl-lab/systemctl.sock"
NOT_BOOTED = (
    "System has not been booted with systemd as init system (PID 1). Can't operate.\n"
    "Failed to connect to bus: Host is down\n"
)


def call(argv: list[str], path: str = SOCKET, timeout: float | None = None) -> tuple[int, str, str]:
    """Send one request to the supervisor listening on ``path``; (rc, stdout, stderr)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(path)
        conn.sendall(json.dumps({"argv": argv}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    reply = json.loads(data)
    return int(reply["rc"]), str(reply["out"]), str(reply["err"])


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--version" in args:
        sys.stdout.write("systemd 252 (hactl-lab stand-in)\n")
        return 0
    if not os.path.exists(SOCKET):
        sys.stderr.write(NOT_BOOTED)
        return 1
    try:
        rc, out, err = call(args)
    except OSError:
        sys.stderr.write(NOT_BOOTED)
        return 1
    sys.stdout.write(out)
    sys.stderr.write(err)
    return rc


if __name__ == "__main__":
    sys.exit(main())
