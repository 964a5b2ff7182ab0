"""The cluster lock: one apply per cluster at a time, kept on the cluster's own hosts.

Where: ``/var/lib/hactl/lock.d/owner.json`` on the etcd members (the masters when etcd is
stacked), so every operator and pipeline that can reach the cluster sees the same lock.

How: the lock is held when it is taken on a **majority** of those hosts. They are tried one by
one **in spec order**; on each host a small ``sh`` script, serialised by ``flock`` on
``/var/lib/hactl/lock.mutex``, creates ``lock.d`` with ``mkdir`` (atomic) and writes the owner
record. The first host where someone else holds an unexpired lock ends the attempt: what we took
is released and :class:`~hactl.errors.LockError` names the holder. Trying in a fixed order means
two applies started together meet on the first reachable host and exactly one wins; requiring a
majority means a host that is down (or cut off from one operator only) cannot let two applies
in: two majorities always share a host. The price: with a majority of the lock hosts down no
apply can start (the cluster's etcd is then down too, so there is nothing safe to apply).

Expiry: the owner record carries a TTL; the holder rewrites it every ``ttl / 3`` seconds while it
runs. A lock whose record was not rewritten for longer than its TTL (judged by the host's own
clock: the file's mtime) is taken over, which is logged. ``hactl unlock -f SPEC`` removes the
lock from every host and prints who held it.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import secrets
import shlex
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Literal

from hactl.errors import HactlError, LockError, TransportError
from hactl.log import get_logger

if TYPE_CHECKING:
    from hactl.spec.models import Cluster
    from hactl.transport.base import Transport

LOCK_ROOT = "/var/lib/hactl"
DEFAULT_TTL = 900.0
Op = Literal["acquire", "takeover", "refresh", "release", "read", "break"]

_SCRIPT = r"""set -u
root={root}; lock="$root/lock.d"; op={op}; mine={mine}; expect={expect}
mkdir -p "$root" || exit 70
exec 9>>"$root/lock.mutex"
flock -w {wait} 9 || {{ echo "hactl-lock: $root/lock.mutex is busy" >&2; exit 75; }}
owned() {{ [ -n "$1" ] && grep -q "\"token\": \"$1\"" "$lock/owner.json" 2>/dev/null; }}
take() {{ cat > "$lock/owner.json.tmp" && mv -f "$lock/owner.json.tmp" "$lock/owner.json"; }}
res=held
case "$op" in
  acquire) if mkdir "$lock" 2>/dev/null; then take && res=acquired; fi ;;
  takeover) if owned "$expect" || mkdir "$lock" 2>/dev/null \
      || {{ [ -z "$expect" ] && [ ! -s "$lock/owner.json" ]; }}; then take && res=acquired; fi ;;
  refresh) if owned "$mine"; then take && res=refreshed; else res=lost; fi ;;
  release) if owned "$mine"; then rm -rf "$lock" && res=released; elif [ -d "$lock" ]; then res=held; else res=free; fi ;;
  break) [ -d "$lock" ] || res=free ;;
  read) [ -d "$lock" ] || res=free ;;
esac
echo "now $(date +%s)"
if [ -d "$lock" ]; then
  echo "mtime $(stat -c %Y "$lock/owner.json" 2>/dev/null || stat -c %Y "$lock")"
  echo "owner $(tr -d '\n' < "$lock/owner.json" 2>/dev/null)"
fi
if [ "$op" = break ] && [ -d "$lock" ]; then rm -rf "$lock" && res=broken; fi
echo "result $res"
"""


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

    @classmethod
    def new(
        cls,
        *,
        ttl: float = DEFAULT_TTL,
        plan_id: str | None = None,
        run_id: str | None = None,
        command: str | None = None,
    ) -> LockOwner:
        return cls(
            token=secrets.token_hex(16),
            who=f"{_user()}@{socket.gethostname()}",
            pid=os.getpid(),
            since=datetime.now(UTC).timestamp(),
            ttl=ttl,
            plan_id=plan_id,
            run_id=run_id,
            command=command if command is not None else shlex.join(["hactl", *sys.argv[1:]]),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LockOwner:
        data = json.loads(text)
        return cls(
            token=str(data.get("token", "")),
            who=str(data.get("who", "unknown")),
            pid=int(data.get("pid", 0)),
            since=float(data.get("since", 0.0)),
            ttl=float(data.get("ttl", DEFAULT_TTL)),
            plan_id=data.get("plan_id"),
            run_id=data.get("run_id"),
            command=str(data.get("command", "")),
        )

    def describe(self) -> str:
        since = datetime.fromtimestamp(self.since, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        text = f"{self.who} (pid {self.pid}) since {since}"
        if self.plan_id:
            text += f", plan {self.plan_id}"
        if self.command:
            text += f", running `{self.command}`"
        return text


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # pragma: no cover - no passwd entry
        return str(os.getuid())


@dataclass(frozen=True)
class HostLock:
    """The lock as one host reported it."""

    host: str
    result: str
    """acquired | held | free | refreshed | lost | released | broken."""
    now: float
    mtime: float | None = None
    owner: LockOwner | None = None

    @property
    def expired(self) -> bool:
        """Nobody rewrote the owner record for longer than its TTL (host clock)."""
        if self.mtime is None:
            return False
        ttl = self.owner.ttl if self.owner else DEFAULT_TTL
        return self.now > self.mtime + ttl


def parse_output(host: str, stdout: str) -> HostLock:
    fields: dict[str, str] = {}
    for line in stdout.splitlines():
        key, _, value = line.partition(" ")
        fields[key] = value.strip()
    if "result" not in fields:
        raise HactlError(f"unexpected lock script output: {stdout.strip()[:200]!r}", host=host)
    owner = None
    if fields.get("owner"):
        try:
            owner = LockOwner.from_json(fields["owner"])
        except (ValueError, TypeError):
            owner = LockOwner("", "unknown (unreadable owner.json)", 0, 0.0, DEFAULT_TTL)
    mtime = float(fields["mtime"]) if fields.get("mtime") else None
    return HostLock(host, fields["result"], float(fields.get("now") or 0), mtime, owner)


def lock_hosts(cluster: Cluster) -> list[str]:
    """The hosts that keep the lock: the etcd members in spec order (masters when stacked)."""
    return [h.name for h in cluster.etcd_members] or [h.name for h in cluster.masters]


class ClusterLock:
    """``async with ClusterLock(cluster, transports, owner):`` holds the lock for the block."""

    def __init__(
        self,
        cluster: Cluster,
        transports: Callable[[str], Transport],
        owner: LockOwner | None = None,
        *,
        root: str = LOCK_ROOT,
        wait: float = 10.0,
        hosts: Sequence[str] | None = None,
    ) -> None:
        self.cluster = cluster
        self.transports = transports
        self.owner = owner or LockOwner.new()
        self.root = root
        self.wait = wait
        self.hosts = list(hosts) if hosts is not None else lock_hosts(cluster)
        self.held_on: list[str] = []
        self._log = get_logger(cluster=cluster.metadata.name, lock_token=self.owner.token[:8])
        self._refresher: asyncio.Task[None] | None = None

    @property
    def majority(self) -> int:
        return len(self.hosts) // 2 + 1

    async def _op(self, host: str, op: Op, expect: str = "") -> HostLock:
        script = _SCRIPT.format(
            root=shlex.quote(self.root),
            op=op,
            mine=shlex.quote(self.owner.token),
            expect=shlex.quote(expect),
            wait=int(self.wait),
        )
        stdin = self.owner.to_json() if op in ("acquire", "takeover", "refresh") else None
        result = await self.transports(host).run(
            script, stdin=stdin, timeout=self.wait + 20, check=False
        )
        if result.exit_status == 75:
            raise LockError(
                f"the lock mutex on {host} stayed busy for {self.wait:g}s",
                host=host,
                hint="another hactl is taking or releasing the lock right now; try again",
            )
        if result.exit_status != 0:
            raise HactlError(
                f"the lock script failed (exit {result.exit_status}): {result.stderr.strip()}",
                host=host,
                hint=f"check that {self.root} is writable and flock(1) is installed",
            )
        return parse_output(host, result.stdout)

    async def acquire(self) -> None:
        """Take the lock on a majority of the lock hosts, or raise :class:`LockError`."""
        unreachable: dict[str, str] = {}
        for host in self.hosts:
            try:
                state = await self._op(host, "acquire")
                if state.result == "held" and state.expired:
                    previous = state.owner.describe() if state.owner else "unknown (no owner.json)"
                    self._log.warning(
                        "lock.takeover",
                        host=host,
                        previous=previous,
                        idle=round(state.now - (state.mtime or 0)),
                    )
                    expect = state.owner.token if state.owner else ""
                    state = await self._op(host, "takeover", expect=expect)
            except TransportError as exc:
                unreachable[host] = exc.message
                continue
            except BaseException:
                await self.release()
                raise
            if state.result == "acquired":
                self.held_on.append(host)
                if len(self.held_on) >= self.majority:
                    self._log.info("lock.acquired", hosts=self.held_on)
                    return
                continue
            await self.release()
            holder = state.owner.describe() if state.owner else "an unknown owner"
            raise LockError(
                f"cluster {self.cluster.metadata.name!r} is locked by {holder}",
                host=host,
                hint="wait for that apply to finish; if it is dead, run "
                "`hactl unlock -f SPEC` (the lock also expires when its holder stops renewing it)",
            )
        await self.release()
        lines = "; ".join(f"{h}: {m}" for h, m in unreachable.items())
        raise LockError(
            f"could not take the lock on a majority ({self.majority} of {len(self.hosts)}) of "
            f"its hosts {', '.join(self.hosts)}" + (f"; unreachable: {lines}" if lines else ""),
            hint="bring the lock hosts (the etcd members) back first",
        )

    async def release(self) -> None:
        """Remove our lock from every host we took it on (others are left alone)."""
        self._stop_refresher()
        held, self.held_on = self.held_on, []
        results = await asyncio.gather(
            *(self._op(h, "release") for h in held), return_exceptions=True
        )
        for host, res in zip(held, results, strict=True):
            if isinstance(res, BaseException):
                self._log.warning("lock.release_failed", host=host, error=str(res))
        if held:
            self._log.info("lock.released", hosts=held)

    async def refresh(self) -> None:
        """Rewrite our owner record (renews the expiry) on the hosts we hold."""
        for host in list(self.held_on):
            try:
                state = await self._op(host, "refresh")
            except HactlError as exc:
                self._log.warning("lock.refresh_failed", host=host, error=str(exc))
                continue
            if state.result == "lost":
                self._log.error("lock.lost", host=host)

    async def read(self) -> dict[str, HostLock | str]:
        """The lock on each lock host (or why it could not be read)."""
        return await self._all("read")

    async def break_lock(self) -> dict[str, HostLock | str]:
        """Remove the lock from every lock host, whoever holds it (``hactl unlock``)."""
        return await self._all("break")

    async def _all(self, op: Op) -> dict[str, HostLock | str]:
        results = await asyncio.gather(
            *(self._op(h, op) for h in self.hosts), return_exceptions=True
        )
        out: dict[str, HostLock | str] = {}
        for host, res in zip(self.hosts, results, strict=True):
            if isinstance(res, HactlError):
                out[host] = res.message
            elif isinstance(res, BaseException):
                raise res
            else:
                out[host] = res
        return out

    def _stop_refresher(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.owner.ttl / 3))
            await self.refresh()

    async def __aenter__(self) -> ClusterLock:
        await self.acquire()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="lock-refresh")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._refresher = self._refresher, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.shield(self.release())
