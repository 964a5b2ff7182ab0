"""Every remote command runs in a process group of its own, which hactl can kill.

A command that timed out, was cancelled (Ctrl-C, a step's timeout) or printed more than the
output cap must not keep running on the host: a retry would run alongside it and the cluster
lock would be released while it still works. So the transport sends each command inside a
small POSIX ``sh`` wrapper (:func:`wrap`) that

1. makes sure the command leads its own process group: under OpenSSH the login shell already
   does (sshd calls ``setsid()`` for every non-pty session; the wrapper checks it in
   ``/proc/self/stat`` with the ``read`` built-in, no process), otherwise (``sudo``, another
   server) it re-executes itself under ``setsid -w``;
2. prints ``hactl-pgid=<PGID> <START>`` as the FIRST line on stderr (the transport takes that
   line out again), so no extra round trip is needed to learn whom to kill; ``START`` is the
   group leader's start time (``/proc/self/stat`` field 22, clock ticks since the host booted),
   so that after a lost connection the group can be told from a later one with the same
   number (the host may have rebooted);
3. runs the command: ``eval`` in the same shell (no extra process), or, when the caller asked
   for a backstop, under ``timeout -k 10 T+30`` so that even a dead hactl (SIGKILL, a lost
   connection) leaves nothing running for long.

To stop it, :func:`kill_script` (sent over a fresh channel of the same connection) sends
SIGKILL to the whole group and waits until no process of the group is left (zombies aside),
re-sending the signal, for at most :data:`KILL_WAIT` seconds; it exits 0 only when the group
is gone. It never signals a group below 2 (``kill -KILL -1`` would hit every process). ``kill -KILL
-PGID`` without ``--``: dash's built-in refuses ``--``.

A command whose SSH connection died while it ran is stopped later, over a new connection, by
:func:`lost_script`: only when the leader of its group is still the same process (same PID and
start time); a leader with another start time means the group is gone (the kernel does not reuse
a PID while a group of that number exists: the host rebooted, or the PID was reused after the
command ended); with the leader gone, only group members started after it are killed, one by
one.
"""

from __future__ import annotations

import re
import shlex

TAG = "hactl-pgid="
"""Prefix of the wrapper's first stderr line."""
_TAG_LINE = re.compile(rb"^hactl-pgid=(\d+)(?: (\d+))?\n")
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
    fields = " ".join(["__hactl_wx"] * 21)  # starttime is field 22 (comm is sh: no spaces)
    inner = (
        f"__hactl_ws=; read -r {fields} __hactl_ws __hactl_wx < /proc/self/stat 2>/dev/null; "
        f'printf \'{TAG}%s %s\\n\' "$$" "$__hactl_ws" >&2; {body}'
    )
    return (
        f"set -- {shlex.quote(wire)}\n"
        "__hactl_wg=; read -r __hactl_wx __hactl_wx __hactl_wx __hactl_wx __hactl_wg __hactl_wx"
        " < /proc/self/stat 2>/dev/null\n"
        f'if [ "$__hactl_wg" != "$$" ]; then exec setsid -w sh -c {shlex.quote(inner)} sh "$1"; fi\n'
        f"{inner}\n"
    )


def take_tag(stderr: bytes) -> tuple[int | None, int | None, bytes]:
    """``(pgid, leader start time, rest)`` when ``stderr`` starts with the wrapper's line;
    ``(None, None, stderr)`` else (the start time is None when /proc could not be read)."""
    match = _TAG_LINE.match(stderr)
    if match is None:
        return None, None, stderr
    pgid = int(match.group(1))
    start = int(match.group(2)) if match.group(2) else None
    if pgid < 2:
        return None, None, stderr[match.end() :]
    return pgid, start, stderr[match.end() :]


def take_pgid(stderr: bytes) -> tuple[int | None, bytes]:
    """``(pgid, rest)`` when ``stderr`` starts with the wrapper's line; ``(None, stderr)`` else."""
    pgid, _, rest = take_tag(stderr)
    return pgid, rest


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


def lost_script(pgid: int, start: int) -> str:
    """sh that stops what is left of process group ``pgid`` whose leader started at ``start``
    (clock ticks since boot), after the connection that ran it died. Exits 0 once nothing of it
    is left (or it is known to be gone), 1 when some of it survives SIGKILL for
    :data:`KILL_WAIT` seconds. Prints what it found on stdout (``same``, ``other``, ``none``)."""
    if pgid < 2:
        raise ValueError(f"refusing to signal process group {pgid}")
    rounds = int(KILL_WAIT / 0.1)
    return f"""g={pgid}; s={start}
__hactl_fields() {{
  {{ read -r l < "$1"; }} 2>/dev/null || return 1
  l=${{l##*") "}}
  set -f; set -- $l; set +f
  st=$1 pg=$3 t=${{20}}
}}
__hactl_leader() {{
  __hactl_fields "/proc/$g/stat" || return 1
  [ "$st" != Z ] && [ "$st" != X ] && [ "$t" = "$s" ]
}}
__hactl_members() {{
  m=
  for f in /proc/[0-9]*/stat; do
    __hactl_fields "$f" || continue
    if [ "$pg" = "$g" ] && [ "$st" != Z ] && [ "$st" != X ] && [ "$t" -ge "$s" ]; then
      p=${{f#/proc/}}; m="$m ${{p%/stat}}"
    fi
  done
  [ -n "$m" ]
}}
if __hactl_leader; then found=same
elif [ -e "/proc/$g" ]; then echo other; exit 0
elif __hactl_members; then found=members
else echo none; exit 0
fi
echo "$found"
i=0
while :; do
  if [ "$found" = same ]; then
    __hactl_leader || __hactl_members || exit 0
    kill -KILL "-$g" 2>/dev/null
  else
    __hactl_members || exit 0
    kill -KILL $m 2>/dev/null
  fi
  i=$((i + 1))
  if [ "$i" -gt {rounds} ]; then echo "process group $g is still there after SIGKILL" >&2; exit 1; fi
  sleep 0.1
done
"""
