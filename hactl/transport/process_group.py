"""Every remote command runs in a process group of its own, which hactl can kill.

A command that timed out, was cancelled (Ctrl-C, a step's timeout) or printed more than the
output cap must not keep running on the host: a retry would run alongside it and the cluster
lock would be released while it still works. So the transport sends each command inside a
small POSIX ``sh`` wrapper (:func:`wrap`) that

1. makes sure the command leads its own process group: under OpenSSH the login shell already
   does (sshd calls ``setsid()`` for every non-pty session; the wrapper checks it in
   ``/proc/self/stat`` with the ``read`` built-in, no process), otherwise (``sudo``, another
   server) it re-executes itself under ``setsid -w``;
2. prints ``hactl-pgid=<PGID>`` as the FIRST line on stderr (the transport takes that line
   out again), so no extra round trip is needed to learn whom to kill;
3. runs the command: ``eval`` in the same shell (no extra process), or, when the caller asked
   for a backstop, under ``timeout -k 10 T+30`` so that even a dead hactl (SIGKILL, a lost
   connection) leaves nothing running for long.

To stop it, :func:`kill_script` (sent over a fresh channel of the same connection) sends
SIGKILL to the whole group and waits until no process of the group is left (zombies aside),
re-sending the signal, for at most :data:`KILL_WAIT` seconds; it exits 0 only when the group
is gone. It never signals a group below 2 (``kill -KILL -1`` would hit every process). ``kill -KILL
-PGID`` without ``--``: dash's built-in refuses ``--``.
"""

from __future__ import annotations

import re
import shlex

TAG = "hactl-pgid="
"""Prefix of the wrapper's first stderr line."""
_TAG_LINE = re.compile(rb"^hactl-pgid=(\d+)\n")
BACKSTOP_GRACE = 30.0
"""Seconds after the caller's own timeout at which the host's ``timeout`` stops the command."""
BACKSTOP_KILL_AFTER = 10
"""``timeout -k``: SIGKILL this many seconds after its SIGTERM."""
KILL_WAIT = 5.0
"""Seconds the kill script waits for the group to be gone."""


def wrap(wire: str, *, backstop: float | None = None) -> str:
    """The sh text sent to the host for the command line (or script) ``wire``.

    ``backstop``: the caller's timeout; the host then also bounds the command by itself
    (``timeout``), ``T + BACKSTOP_GRACE`` seconds. None: no backstop (read-only commands)."""
    if backstop is not None:
        limit = f"{backstop + BACKSTOP_GRACE:g}"
        body = f'exec timeout -k {BACKSTOP_KILL_AFTER} {limit} sh -c "$1"'
    else:
        body = '__hactl_wc=$1; set --; eval "$__hactl_wc"'
    inner = f"printf '{TAG}%s\\n' \"$$\" >&2; {body}"
    return (
        f"set -- {shlex.quote(wire)}\n"
        "__hactl_wg=; read -r __hactl_wx __hactl_wx __hactl_wx __hactl_wx __hactl_wg __hactl_wx"
        " < /proc/self/stat 2>/dev/null\n"
        f'if [ "$__hactl_wg" != "$$" ]; then exec setsid -w sh -c {shlex.quote(inner)} sh "$1"; fi\n'
        f"{inner}\n"
    )


def take_pgid(stderr: bytes) -> tuple[int | None, bytes]:
    """``(pgid, rest)`` when ``stderr`` starts with the wrapper's line; ``(None, stderr)`` else."""
    match = _TAG_LINE.match(stderr)
    if match is None:
        return None, stderr
    pgid = int(match.group(1))
    return (pgid if pgid >= 2 else None), stderr[match.end() :]


def kill_script(pgid: int) -> str:
    """sh that SIGKILLs process group ``pgid`` and exits 0 once none of its processes is left
    (1 when some still are after :data:`KILL_WAIT` seconds, e.g. stuck in the kernel)."""
    if pgid < 2:
        raise ValueError(f"refusing to signal process group {pgid}")
    rounds = int(KILL_WAIT / 0.1)
    return f"""g={pgid}
__hactl_alive() {{
  for f in /proc/[0-9]*/stat; do
    {{ read -r l < "$f"; }} 2>/dev/null || continue
    l=${{l##*") "}}
    set -f; set -- $l; set +f
    if [ "$3" = "$g" ] && [ "$1" != Z ] && [ "$1" != X ]; then return 0; fi
  done
  return 1
}}
i=0
while __hactl_alive; do
  kill -KILL "-$g" 2>/dev/null
  i=$((i + 1))
  if [ "$i" -gt {rounds} ]; then echo "process group $g is still there after SIGKILL" >&2; exit 1; fi
  sleep 0.1
done
exit 0
"""
