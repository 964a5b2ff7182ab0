"""The cluster lock: one apply per cluster at a time, kept on the cluster's own hosts.

Where: ``/var/lib/hactl/lock.d/owner.json`` on the etcd members (the masters when etcd is
stacked), so every operator and pipeline that can reach the cluster sees the same lock.

How: the lock is held when it is taken on a **majority** of those hosts. They are tried one by
one **in name order** (never spec order: two operators whose specs list the same members in
different orders must meet on the same first host); on each host a small ``sh`` script,
serialised by ``flock`` on ``/var/lib/hactl/lock.mutex``, creates ``lock.d`` with ``mkdir``
(atomic) and writes the owner record, which travels inside the script (never on stdin, so the
host has all of it before it creates ``lock.d``: a hactl killed mid-acquire leaves a complete
record of a gone holder, never an ownerless ``lock.d``). The first host where someone else holds an unexpired lock
ends the attempt: what we took is released and :class:`~hactl.errors.LockError` names the holder
and the lock id. Trying in a fixed order means two applies started together meet on the first
reachable host and exactly one wins; requiring a majority means a host that is down (or cut off
from one operator only) cannot let two applies in: two majorities always share a host. The
price: with a majority of the lock hosts down no apply can start (the cluster's etcd is then
down too, so there is nothing safe to apply).

Expiry: the owner record carries a TTL; the holder rewrites it every ``ttl / 3`` seconds while it
runs. A lock whose record was not rewritten for longer than its TTL (judged by the host's own
clock: the file's mtime) is taken over, which is logged.

Losing it: a renewal that finds the record gone or someone else's (``hactl unlock``, a
takeover), or renewals that failed for longer than ``ttl / 2``, mark the lock **lost**
(:attr:`ClusterLock.lost`). The apply engine asks :meth:`ClusterLock.gate` before every step: a
lost lock starts no new step (a running one is not cut off mid-command), and before each etcd
member step the lock is renewed and re-checked on the spot.

Breaking it: ``hactl unlock -f SPEC LOCK_ID`` removes the lock whose id matches (compare and
swap on each host); a lock renewed within its TTL is kept unless ``--force``, or unless its
holder is provably gone (see :mod:`hactl.lock_owner`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Literal

from hactl.errors import HactlError, LockError, TransportError
from hactl.hostlayout import HACTL_LOCK_ROOT
from hactl.lock_owner import DEFAULT_TTL, LOCK_ID_RE, LockOwner
from hactl.log import get_logger

if TYPE_CHECKING:
    from hactl.spec.models import Cluster
    from hactl.transport.base import Transport

__all__ = [
    "DEFAULT_TTL",
    "LOCK_ID_RE",
    "ClusterLock",
    "HostLock",
    "LockLostError",
    "LockOwner",
    "lock_hosts",
]

LOCK_ROOT = HACTL_LOCK_ROOT
MEMBER_STEP = re.compile(r".*etcd_member.*")
"""Step kinds re-checked against the lock right before they start (etcd membership and restarts)."""
RELEASE_TRIES = 3
"""Tries to release the lock on a host that could not be reached (then it is left to expire)."""
RELEASE_PAUSE = 3.0
"""Seconds between those tries."""
Op = Literal["acquire", "takeover", "refresh", "release", "read", "break"]

_SCRIPT = r"""set -u
root={root}; lock="$root/lock.d"; op={op}; mine={mine}; expect={expect}; owner={owner}
mkdir -p "$root" || exit 70
exec 9>>"$root/lock.mutex"
flock -w {wait} 9 || {{ echo "hactl-lock: $root/lock.mutex is busy" >&2; exit 75; }}
owned() {{ [ -n "$1" ] && grep -q "\"token\": \"$1\"" "$lock/owner.json" 2>/dev/null; }}
take() {{ printf '%s\n' "$owner" > "$lock/owner.json.tmp" && mv -f "$lock/owner.json.tmp" "$lock/owner.json"; }}
res=held
case "$op" in
  acquire) if mkdir "$lock" 2>/dev/null; then take && res=acquired; fi ;;
  takeover) if owned "$expect" || mkdir "$lock" 2>/dev/null \
      || {{ [ -z "$expect" ] && [ ! -s "$lock/owner.json" ]; }}; then take && res=acquired; fi ;;
  refresh) if owned "$mine"; then take && res=refreshed; else res=lost; fi ;;
  release) if owned "$mine"; then rm -rf "$lock" && res=released; elif [ -d "$lock" ]; then res=held; else res=free; fi ;;
  break) if [ ! -d "$lock" ]; then res=free
      elif [ -z "$expect" ] || grep -q "\"token\": \"$expect" "$lock/owner.json" 2>/dev/null; then brk=1
      fi ;;
  read) [ -d "$lock" ] || res=free ;;
esac
echo "now $(date +%s)"
if [ -d "$lock" ]; then
  echo "mtime $(stat -c %Y "$lock/owner.json" 2>/dev/null || stat -c %Y "$lock")"
  echo "owner $(tr -d '\n' < "$lock/owner.json" 2>/dev/null)"
fi
if [ "${{brk:-}}" = 1 ]; then rm -rf "$lock" && res=broken; fi
echo "result $res"
"""


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

    @property
    def age(self) -> float | None:
        """Seconds since the owner record was last written (renewed), by the host's clock."""
        return None if self.mtime is None else max(0.0, self.now - self.mtime)

    def describe(self) -> str:
        """The holder, its lock id, when it last renewed, and proof that it is gone if any."""
        text = self.owner.describe() if self.owner else "an unknown owner (no owner.json)"
        if self.age is not None:
            ttl = self.owner.ttl if self.owner else DEFAULT_TTL
            state = "expired" if self.expired else "within its TTL"
            text += f"; last renewed {self.age:.0f}s ago ({state} of {ttl:g}s)"
        gone = self.owner.gone() if self.owner else None
        if gone:
            text += f"; STALE: {gone}"
        return text


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
        except (ValueError, TypeError, OverflowError):
            owner = LockOwner("", "unknown (unreadable owner.json)", 0, 0.0, DEFAULT_TTL)
    try:
        mtime = float(fields["mtime"]) if fields.get("mtime") else None
        now = float(fields.get("now") or 0)
    except ValueError as exc:
        raise HactlError(
            f"unexpected lock script output: {stdout.strip()[:200]!r}", host=host
        ) from exc
    return HostLock(host, fields["result"], now, mtime, owner)


def lock_hosts(cluster: Cluster) -> list[str]:
    """The hosts that keep the lock: the etcd members (the masters when stacked), **sorted by
    name**, so that every operator tries them in the same order whatever order their spec uses."""
    names = [h.name for h in cluster.etcd_members] or [h.name for h in cluster.masters]
    return sorted(names)


class LockLostError(LockError):
    """The apply's lock was broken, taken over, or could not be renewed: it stopped."""


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
        clock: Callable[[], float] = time.monotonic,
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
        self._clock = clock
        self.release_pause = RELEASE_PAUSE
        self._confirmed = clock()
        """When a majority last confirmed our record (``clock()``)."""
        self.lost: str | None = None
        """Why the lock is lost (None while it is held): set by :meth:`refresh`."""

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
            # In the script, not on stdin: the host gets the whole record in the one request
            # that starts the script, so a hactl killed (or a connection lost) while it runs can
            # never leave a lock.d with a missing or cut owner.json. Nothing in it is secret.
            owner=shlex.quote(self.owner.to_json() if op in ("acquire", "takeover", "refresh") else ""),
        )
        result = await self.transports(host).run(script, timeout=self.wait + 20, check=False)
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
                    self._confirmed, self.lost = self._clock(), None
                    self._log.info("lock.acquired", hosts=self.held_on, lock_id=self.owner.lock_id)
                    return
                continue
            await self.release()
            raise self._held_error(state)
        await self.release()
        lines = "; ".join(f"{h}: {m}" for h, m in unreachable.items())
        raise LockError(
            f"could not take the lock on a majority ({self.majority} of {len(self.hosts)}) of "
            f"its hosts {', '.join(self.hosts)}" + (f"; unreachable: {lines}" if lines else ""),
            hint="bring the lock hosts (the etcd members) back first",
        )

    def _held_error(self, state: HostLock) -> LockError:
        lock_id = state.owner.lock_id if state.owner and state.owner.token else None
        command = f"`hactl unlock -f SPEC {lock_id or ''}`".replace(" `", "`")
        gone = state.owner.gone() if state.owner else None
        hint = (
            f"its holder is gone: run {command} to remove it"
            if gone
            else "wait for that apply to finish; if its holder is dead, run "
            f"{command} (the lock also expires when its holder stops renewing it)"
        )
        return LockError(
            f"cluster {self.cluster.metadata.name!r} is locked by {state.describe()}",
            host=state.host,
            hint=hint,
        )

    async def peek(self) -> None:
        """Raise the :class:`LockError` that :meth:`acquire` would raise for a live lock held by
        someone else, without taking anything (before a plan is shown for approval)."""
        states = await self.read()
        for host in self.hosts:
            state = states.get(host)
            if isinstance(state, HostLock) and state.result == "held" and not state.expired:
                raise self._held_error(state)

    async def release(self) -> None:
        """Remove our lock from every host we took it on (others are left alone).

        A host that could not be reached (it may be rebooting: the transport reconnects on the
        next try) is tried again, :data:`RELEASE_TRIES` times in all, :data:`RELEASE_PAUSE`
        seconds apart; what still fails is logged (the record then expires with its TTL, or
        ``hactl unlock`` removes it)."""
        self._stop_refresher()
        held, self.held_on = self.held_on, []
        pending, done = list(held), []
        for attempt in range(1, RELEASE_TRIES + 1):
            results = await asyncio.gather(
                *(self._op(h, "release") for h in pending), return_exceptions=True
            )
            again = []
            for host, res in zip(pending, results, strict=True):
                if not isinstance(res, BaseException):
                    done.append(host)
                    continue
                retry = isinstance(res, HactlError) and res.transient and attempt < RELEASE_TRIES
                self._log.warning(
                    "lock.release_failed", host=host, error=str(res), attempt=attempt,
                    retry=retry,
                )  # fmt: skip
                if retry:
                    again.append(host)
            if not again:
                break
            pending = again
            await asyncio.sleep(self.release_pause)
        if done:
            self._log.info("lock.released", hosts=done)

    async def refresh(self) -> None:
        """Rewrite our owner record (renews the expiry) on the hosts we hold, all at once.

        Sets :attr:`lost` when a host says the record is no longer ours (broken with ``hactl
        unlock`` or taken over), or when no majority confirmed it for longer than ``ttl / 2``."""
        held = list(self.held_on)
        results = await asyncio.gather(
            *(self._op(h, "refresh") for h in held), return_exceptions=True
        )
        confirmed = 0
        for host, res in zip(held, results, strict=True):
            if isinstance(res, Exception):  # unreachable, or an unexpected answer: not confirmed
                self._log.warning("lock.refresh_failed", host=host, error=str(res))
            elif isinstance(res, BaseException):
                raise res
            elif res.result == "refreshed":
                confirmed += 1
            elif res.result == "lost" and self.lost is None:
                holder = f" (now held by {res.owner.describe()})" if res.owner else ""
                self._mark_lost(
                    f"{host}: our lock record was removed or replaced{holder}: someone ran "
                    "`hactl unlock` or took the lock over"
                )
        now = self._clock()
        if confirmed >= self.majority:
            self._confirmed = now
        self.check_renewals(now)

    def check_renewals(self, now: float | None = None) -> str | None:
        """Mark the lock lost when no majority confirmed it for longer than ``ttl / 2``."""
        now = self._clock() if now is None else now
        silent = now - self._confirmed
        if self.lost is None and self.held_on and silent > self.owner.ttl / 2:
            self._mark_lost(
                f"the lock could not be renewed on a majority of {', '.join(self.hosts)} for "
                f"{silent:.0f}s (more than half its TTL of {self.owner.ttl:g}s): another apply "
                "may take it over"
            )
        return self.lost

    def _mark_lost(self, why: str) -> None:
        self.lost = why
        self._log.error("lock.lost", reason=why, lock_id=self.owner.lock_id)

    async def gate(self, step_kind: str) -> str | None:
        """Asked by the engine before a step starts: why it must not start (lock lost), or None.

        Before an etcd member step (membership change or restart) the record is renewed and
        re-checked on the spot (one short script per lock host)."""
        if self.check_renewals() is None and MEMBER_STEP.fullmatch(step_kind):
            await self.refresh()
        return self.lost

    async def read(self) -> dict[str, HostLock | str]:
        """The lock on each lock host (or why it could not be read)."""
        return await self._all("read")

    async def break_lock(self, expect: str | Mapping[str, str] = "") -> dict[str, HostLock | str]:
        """Remove the lock from the lock hosts (``hactl unlock``): only where the holder's lock id
        starts with ``expect`` (one id for all hosts, or one per host); ``""`` breaks any."""
        if isinstance(expect, str):
            return await self._all("break", dict.fromkeys(self.hosts, expect))
        return await self._all("break", dict(expect))

    async def _all(
        self, op: Op, expect: Mapping[str, str] | None = None
    ) -> dict[str, HostLock | str]:
        hosts = list(expect) if expect is not None else self.hosts
        results = await asyncio.gather(
            *(self._op(h, op, (expect or {}).get(h, "")) for h in hosts), return_exceptions=True
        )
        out: dict[str, HostLock | str] = {}
        for host, res in zip(hosts, results, strict=True):
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
        """Renew every ``ttl / 3``; after a renewal that no majority confirmed, retry sooner
        (``ttl / 12``) so that one failure does not bring the lock near ``ttl / 2``."""
        interval = self.owner.ttl / 3
        while True:
            await asyncio.sleep(max(1.0, interval))
            before = self._confirmed
            await self.refresh()
            interval = self.owner.ttl / 3 if self._confirmed != before else self.owner.ttl / 12

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


def decide_unlock(held: Mapping[str, HostLock], lock_id: str | None, force: bool) -> dict[str, str]:
    """What ``hactl unlock`` may remove: host → the lock id to match there (compare and swap).

    Without a lock id nothing is removed unless ``force`` or every holder is provably gone
    (:meth:`LockOwner.gone`: a process of this machine and boot that no longer exists); with one,
    only records of that lock, and not while it is renewed within its TTL (its holder looks
    alive) unless ``force`` or its holder is provably gone. Raises :class:`LockError` saying why
    nothing was removed and what to run."""
    by_holder: dict[str, list[str]] = {}
    for host, state in held.items():
        by_holder.setdefault(state.describe(), []).append(host)
    holders = "; ".join(f"{', '.join(hs)}: {text}" for text, hs in by_holder.items())
    if lock_id is None:
        if force or all(_gone(s) for s in held.values()):
            # --force, or every holder is proven gone: remove what was read, and only that
            return {h: s.owner.lock_id if s.owner else "" for h, s in held.items()}
        ids = sorted({s.owner.lock_id for s in held.values() if s.owner and s.owner.token})
        which = ids[0] if len(ids) == 1 else "LOCK_ID"
        raise LockError(
            f"the cluster lock is held ({holders}); nothing was removed",
            hint="wait for that apply to finish; if its holder is dead, remove the lock with "
            f"`hactl unlock -f SPEC {which}` (add --force if it was renewed within its TTL)",
        )
    matching = {
        h: s for h, s in held.items() if s.owner is not None and s.owner.token.startswith(lock_id)
    }
    if not matching:
        raise LockError(
            f"no lock with id {lock_id} is held; the lock now is: {holders}",
            hint="run `hactl unlock -f SPEC` to see the current holder and its lock id",
        )
    live = {h: s for h, s in matching.items() if not s.expired and not _gone(s)}
    if live and not force:
        host, state = next(iter(live.items()))
        raise LockError(
            f"lock {lock_id} was renewed {state.age or 0:.0f}s ago, within its TTL: its holder "
            f"looks alive ({state.describe()}); nothing was removed",
            host=host,
            hint="wait for that apply to finish (or its lock to expire); if you are sure its "
            f"holder is dead, run `hactl unlock -f SPEC {lock_id} --force`",
        )
    return dict.fromkeys(matching, lock_id)


def _gone(state: HostLock) -> bool:
    return state.owner is not None and state.owner.gone() is not None
