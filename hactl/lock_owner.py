"""Who holds the cluster lock, and whether that holder is provably gone.

The owner record (``owner.json`` on each lock host) names the holder: ``user@machine``, pid,
since when, the TTL, the plan and run, and a random ``token`` that only the holder knows. Its
first 16 hex digits are the **lock id** that ``hactl unlock -f SPEC LOCK_ID`` names (Terraform's
``force-unlock LOCK_ID``); the rest stays the holder's own proof of ownership.

The record also carries the holder's host name, the kernel boot id and the start time of its
process. When ``hactl`` reads a lock taken **on this machine during this boot** (a CI runner whose
job was killed mid-apply) it can prove the holder is dead: the pid no longer exists, or is now a
different process (another start time). That is the only staleness hactl asserts on its own; a
holder on another machine is judged by its renewals (the TTL) alone.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import secrets
import shlex
import socket
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

DEFAULT_TTL = 900.0
LOCK_ID_CHARS = 16
LOCK_ID_RE = re.compile(r"[0-9a-f]{8,32}")
"""What ``hactl unlock`` accepts as a lock id (a prefix of the owner's token, 8 to 32 hex)."""


def boot_id() -> str:
    """This machine's kernel boot id ("" where there is none)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def process_start(pid: int) -> str:
    """The start time (clock ticks since boot) of a local process, "" when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return ""
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # pragma: no cover - no passwd entry
        return str(os.getuid())


@dataclass(frozen=True)
class LockOwner:
    """Who holds the lock (the content of ``owner.json``; no secrets)."""

    token: str
    who: str
    """``user@machine`` of the operator or pipeline runner."""
    pid: int
    since: float
    """Unix time the lock was taken (the taker's clock)."""
    ttl: float
    plan_id: str | None = None
    run_id: str | None = None
    command: str = ""
    hostname: str = ""
    """The holder's host name (``socket.gethostname()``)."""
    boot_id: str = ""
    """The holder machine's kernel boot id (tells a reboot from the same boot)."""
    pid_start: str = ""
    """The holder process's start time in clock ticks (tells a reused pid from the holder)."""

    @classmethod
    def new(
        cls,
        *,
        ttl: float = DEFAULT_TTL,
        plan_id: str | None = None,
        run_id: str | None = None,
        command: str | None = None,
    ) -> LockOwner:
        pid = os.getpid()
        return cls(
            token=secrets.token_hex(16),
            who=f"{_user()}@{socket.gethostname()}",
            pid=pid,
            since=datetime.now(UTC).timestamp(),
            ttl=ttl,
            plan_id=plan_id,
            run_id=run_id,
            command=command if command is not None else shlex.join(["hactl", *sys.argv[1:]]),
            hostname=socket.gethostname(),
            boot_id=boot_id(),
            pid_start=process_start(pid),
        )

    @property
    def lock_id(self) -> str:
        """The public id of this lock (``hactl unlock -f SPEC LOCK_ID``)."""
        return self.token[:LOCK_ID_CHARS]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LockOwner:
        data: Any = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("owner.json is not an object")
        return cls(
            token=str(data.get("token", "")),
            who=str(data.get("who", "unknown")),
            pid=int(data.get("pid", 0)),
            since=float(data.get("since", 0.0)),
            ttl=float(data.get("ttl", DEFAULT_TTL)),
            plan_id=_opt_str(data.get("plan_id")),
            run_id=_opt_str(data.get("run_id")),
            command=str(data.get("command", "")),
            hostname=str(data.get("hostname", "")),
            boot_id=str(data.get("boot_id", "")),
            pid_start=str(data.get("pid_start", "")),
        )

    def describe(self) -> str:
        since = datetime.fromtimestamp(self.since, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        text = f"{self.who} (pid {self.pid}) since {since}"
        if self.plan_id:
            text += f", plan {self.plan_id}"
        if self.command:
            text += f", running `{self.command}`"
        if self.token:
            text += f", lock id {self.lock_id}"
        return text

    def gone(self) -> str | None:
        """Proof that the holder process no longer exists, or None when that cannot be shown.

        Only a holder on this machine in this boot can be judged: its pid is gone, or belongs to
        a process that started at another time (the pid was reused)."""
        here = socket.gethostname()
        if not self.boot_id or self.hostname != here or self.boot_id != boot_id() or self.pid <= 0:
            return None
        started = process_start(self.pid)
        if not started and not _pid_exists(self.pid):
            return (
                f"its process (pid {self.pid}) no longer runs on this machine ({here}, same boot)"
            )
        if self.pid_start and started and started != self.pid_start:
            return (
                f"pid {self.pid} on this machine ({here}) is now another process "
                "(a different start time): the holder is gone"
            )
        return None


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True
