"""The ``systemctl`` stand-in (client): forwards its arguments to the node's supervisor.

Runs inside lab nodes under Debian's ``/usr/bin/python3`` (shim in /usr/local/sbin): standard
library only, and only its C modules: the shim runs this file as a script with ``-S -E`` (see
:data:`hactl.lab.standins.SCRIPT_SHIMS`), so a call costs about 10 ms of CPU instead of 30,
closer to the real systemctl's few milliseconds (the probe asks it on every host). The service
manager itself is :mod:`hactl.lab.supervisor`, running as the node's PID 1; the verbs are
implemented in :mod:`hactl.lab.control`. Outside a lab node (no supervisor socket) it fails like
the real systemctl in a container without systemd.
"""

from __future__ import annotations

import _json  # the C halves only: `json` and `socket` would pull in re and enum (~15 ms a call)
import _socket
import os
import sys

SOCKET = "/run/hactl-lab/systemctl.sock"
NOT_BOOTED = (
    "System has not been booted with systemd as init system (PID 1). Can't operate.\n"
    "Failed to connect to bus: Host is down\n"
)


def encode_request(argv: list[str]) -> bytes:
    """``{"argv": [...]}`` as one JSON line (the supervisor reads it with :func:`json.loads`)."""
    words = ", ".join(_json.encode_basestring_ascii(a) for a in argv)
    return ('{"argv": [' + words + "]}\n").encode()


def encode_reply(rc: int, out: str, err: str) -> bytes:
    """``RC LEN_OUT LEN_ERR`` line, then stdout and stderr (UTF-8): no JSON to decode."""
    out_b, err_b = out.encode(), err.encode()
    return b"%d %d %d\n" % (rc, len(out_b), len(err_b)) + out_b + err_b


def decode_reply(data: bytes) -> tuple[int, str, str] | None:
    """The inverse of :func:`encode_reply`; None while ``data`` is incomplete. A supervisor
    started before this format answers one JSON line; that is still understood (nodes see the
    checkout live, so a running lab's old supervisors meet new clients after a ``git pull``)."""
    head, found, body = data.partition(b"\n")
    if not found:
        return None
    if head.startswith(b"{"):
        import json

        reply = json.loads(head)
        return int(reply["rc"]), str(reply["out"]), str(reply["err"])
    rc, n_out, n_err = (int(x) for x in head.split())
    if len(body) < n_out + n_err:
        return None
    return rc, body[:n_out].decode(), body[n_out : n_out + n_err].decode()


def call(argv: list[str], path: str = SOCKET, timeout: float | None = None) -> tuple[int, str, str]:
    """Send one request to the supervisor listening on ``path``; (rc, stdout, stderr)."""
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        conn.settimeout(timeout)
        conn.connect(path)
        conn.sendall(encode_request(argv))
        data = b""
        while (reply := decode_reply(data)) is None:
            chunk = conn.recv(65536)
            if not chunk:
                raise OSError("the supervisor closed the connection mid-answer")
            data += chunk
        return reply
    finally:
        conn.close()


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
