"""One ``hactl apply``: connect → lock → probe → plan (or load a saved one and prove it is not
stale) → execute the DAG (journaled), whose last step (Verify) is ``hactl check`` → summary and
that check's report. The cluster is checked once: nothing probes or checks again after the DAG.
With nothing to do, the check runs once on the facts the plan was made from. The lock is released
and the connections closed whatever happens.

When a person must approve the plan (``apply -f SPEC`` without ``--auto-approve``) the plan is
made and shown **before** the lock is taken, so an unanswered prompt holds nothing; after ``yes``
the lock is taken, the hosts are probed again and the approved plan runs only if they still look
as they did (the saved-plan staleness check); otherwise nothing runs and the change is named."""

from __future__ import annotations

import asyncio
import hashlib
import json
import reprlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hactl.apply.engine import Engine
from hactl.apply.results import ApplyResult, Reporter, RetryPolicy, failure_report
from hactl.check import run_check
from hactl.diff import Op
from hactl.errors import HactlError, StalePlanError, UnreachableError
from hactl.facts.model import Observed
from hactl.journal import Journal, journal_path, new_run_id
from hactl.lock import DEFAULT_TTL, ClusterLock, LockOwner
from hactl.log import get_logger
from hactl.plan.planner import Plan, build_plan
from hactl.plan.step import RunSecrets

if TYPE_CHECKING:
    from hactl.probe import Opener
    from hactl.spec.models import Cluster, Host
    from hactl.transport.base import Transport
    from hactl.transport.ssh import Connections

Transports = Callable[[str], "Transport"]
Opened = Mapping[str, "Transport | BaseException"]


@dataclass
class Options:
    cluster: Cluster | None = None
    """The spec (``apply -f``); None for a saved plan."""
    spec_file: str | None = None
    plan_file: str | None = None
    parallelism: int | None = None
    confirm: Callable[[], None] | None = None
    """Blocking approval (asks ``yes`` on a TTY); raises to cancel. Run in a thread, before
    the lock is taken. None: approved in advance (``--auto-approve``); unused for saved plans."""
    echo: Callable[[str], None] = print
    colour: bool = False
    reporter: Callable[[], AbstractContextManager[Reporter]] | None = None
    retry: RetryPolicy | None = None
    check_settle: float | None = None
    """At most this many seconds of settling for the closing check (the Verify step); None: the
    step's own window (its timeout less the time kept for the last gather). Tests set 0."""
    lock_ttl: float = DEFAULT_TTL


def transport_getter(opened: Opened) -> Transports:
    """``host → Transport``; a host that could not be connected raises its (transient) error."""

    def get(host: str) -> Transport:
        found = opened.get(host)
        if found is None:
            raise UnreachableError("no connection was opened to this host", host=host)
        if isinstance(found, BaseException):
            if isinstance(found, HactlError):
                raise found
            raise UnreachableError(str(found), host=host) from found
        return found

    return get


class Pool(dict[str, "Transport | BaseException"]):
    """The hosts' connections (name → transport, or the error that kept it from opening), and
    :meth:`connect` for more hosts (the probe's departing hosts, in the cluster but no longer in
    the spec): what it opens joins the pool, so the steps that reset a departing host find its
    connection like any other."""

    def __init__(self, conns: Connections, opened: Mapping[str, Transport | BaseException]) -> None:
        super().__init__(opened)
        self._conns = conns

    async def connect(self, hosts: Sequence[Host]) -> Mapping[str, Transport | BaseException]:
        more = await self._conns.open_all(hosts)
        self.update(more)
        return more


def opener(opened: Opened) -> Opener | None:
    """The pool's :meth:`Pool.connect` (None for a plain mapping: no departing host is probed)."""
    return opened.connect if isinstance(opened, Pool) else None


@asynccontextmanager
async def connections(cluster: Cluster, spec_dir: str) -> AsyncIterator[tuple[Transports, Opened]]:
    """One SSH connection per host for the whole command (the probe's pool)."""
    from hactl.transport.ssh import Connections

    async with Connections(cluster, spec_dir=spec_dir) as conns:
        opened = Pool(conns, await conns.open_all())
        yield transport_getter(opened), opened


async def in_daemon_thread(fn: Callable[[], None]) -> None:
    """Run a blocking call (the approval prompt) without blocking the event loop; a daemon
    thread, so Ctrl-C during the prompt does not wait for an answer before hactl exits."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # handed to the awaiting coroutine
            loop.call_soon_threadsafe(settle, exc)
        else:
            loop.call_soon_threadsafe(settle, None)

    threading.Thread(target=target, name="hactl-approve", daemon=True).start()
    await done


def plan_id(plan: Plan) -> str:
    """Short stable id of a plan: its spec, fingerprint and step ids."""
    doc = {
        "spec": plan.cluster.model_dump(mode="json", by_alias=True),
        "fingerprint": plan.fingerprint,
        "steps": [s.id for s in plan.steps()],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


def stale_report(saved: Plan, fresh: Plan, observed: Observed | None = None) -> str | None:
    """None when the hosts still look as the saved plan saw them; else what changed, per host
    (``observed``, the fresh probe, tells a host that changed from one that did not answer)."""
    before, now = saved.fingerprint, fresh.fingerprint
    hosts = sorted(h for h in set(before) | set(now) if before.get(h) != now.get(h))
    if not hosts:
        return None
    was = {(c.address, c.op) for c in saved.diff.effective()}
    is_ = {(c.address, c.op) for c in fresh.diff.effective()}
    lines = []
    for host in hosts:
        if host not in now:
            lines.append(f"  {host}: no longer in the spec's observation")
            continue
        if host not in before:
            lines.append(f"  {host}: not observed when the plan was made")
            continue
        facts = observed.get(host) if observed is not None else None
        if facts is not None and not facts.reachable:
            lines.append(f"  {host}: could not be read now ({facts.error or 'unreachable'})")
            continue
        new = [c for c in fresh.diff.effective() if c.host == host and (c.address, c.op) not in was]
        gone = [
            c for c in saved.diff.effective() if c.host == host and (c.address, c.op) not in is_
        ]
        if not new and not gone:
            lines.append(f"  {host}: its facts changed (same actions would be planned)")
        for c in new:
            lines.append(f"  {host}: now needs {c.op.symbol} {c.address}: {c.reason}")
        for c in gone:
            lines.append(f"  {host}: no longer needs {c.op.symbol} {c.address}")
    return "\n".join(lines)


def applied_counts(plan: Plan, result: ApplyResult) -> tuple[int, int, int]:
    """(added, changed, removed): the plan's changes whose steps all succeeded."""
    by_address: dict[str, list[str]] = {}
    for res in result.results.values():
        by_address.setdefault(res.step.address, []).append(res.outcome)
    add = change = remove = 0
    for c in plan.diff.effective():
        outcomes = by_address.get(c.address)
        done = all(o == "ok" for o in outcomes) if outcomes else result.ok
        if not done:
            continue
        add += c.op in (Op.CREATE, Op.REPLACE)
        remove += c.op in (Op.DELETE, Op.REPLACE)
        change += c.op is Op.UPDATE
    return add, change, remove


async def run_apply(opts: Options) -> ApplyResult | None:
    """The whole command. Returns the engine's result (None when there was nothing to do);
    raises :class:`HactlError` subclasses (ApplyError, StalePlanError, LockError…)."""
    from hactl.plan import planfile
    from hactl.plan.output import render_text

    saved = planfile.load(opts.plan_file) if opts.plan_file else None
    cluster = saved.cluster if saved else opts.cluster
    anchor = opts.plan_file or opts.spec_file
    if cluster is None or anchor is None:
        raise HactlError("apply needs a spec or a saved plan")
    run_id = new_run_id()
    log = get_logger(run_id=run_id, cluster=cluster.metadata.name)
    spec_dir = str(Path(anchor).resolve().parent)
    owner = LockOwner.new(
        run_id=run_id, plan_id=plan_id(saved) if saved else None, ttl=opts.lock_ttl
    )
    async with connections(cluster, spec_dir) as (get, opened):
        from hactl.probe import probe

        connect = opener(opened)
        approved = saved
        lock = ClusterLock(cluster, get, owner)
        if saved is None and opts.confirm is not None:
            # ask first, without the lock: an unanswered prompt must not hold the cluster;
            # a live lock held by another apply is still reported before anything is probed
            await lock.peek()
            seen = await probe(cluster, opened, connect=connect)
            approved = build_plan(cluster, seen, now=datetime.now(UTC))
            opts.echo(render_text(approved, colour=opts.colour).rstrip("\n"))
            if len(approved.graph) == 0:
                await _check_unchanged(opts, cluster, get, opened, seen)
                return None
            await in_daemon_thread(opts.confirm)
        async with lock:
            observed = await probe(cluster, opened, connect=connect)
            fresh = build_plan(cluster, observed, now=datetime.now(UTC))
            if approved is not None:
                stale = stale_report(approved, fresh, observed)
                if stale is not None:
                    raise _stale_error(stale, saved is not None)
                differ = step_differences(approved, fresh)
                if differ is not None:
                    raise _differ_error(differ, opts.plan_file)
                plan = approved
            else:
                plan = fresh
                opts.echo(render_text(plan, colour=opts.colour).rstrip("\n"))
            if len(plan.graph) == 0:
                await _check_unchanged(opts, cluster, get, opened, observed)
                return None
            result = await _execute(opts, cluster, plan, get, run_id, anchor, lock.gate)
            result.added, result.changed, result.removed = applied_counts(plan, result)
            log.info("apply.summary", summary=result.summary())
            opts.echo(result.summary())
            if result.report is not None:  # the Verify step's check: printed once, not rerun
                opts.echo(result.report.render_text())
            if not result.ok:
                raise failure_report(result)
            return result


IGNORED_STEP_FIELDS = frozenset({"title", "reason"})
"""Step fields that are words for people (they may name an age that grows with time)."""


def step_differences(approved: Plan, fresh: Plan) -> str | None:
    """None when ``approved`` runs exactly the steps (kinds, fields, order constraints) that a
    fresh plan for the same facts runs; else what differs, one line each. A saved plan is input:
    a well-typed but edited step (a longer timeout, another ``via``) must not run."""

    def steps(plan: Plan) -> dict[str, dict[str, Any]]:
        return {
            s.id: {k: v for k, v in s.to_data().items() if k not in IGNORED_STEP_FIELDS}
            for s in plan.steps()
        }

    mine, now = steps(approved), steps(fresh)
    lines = [f"  step {i}: in the plan, not in a fresh plan" for i in sorted(set(mine) - set(now))]
    lines += [f"  step {i}: in a fresh plan, not in the plan" for i in sorted(set(now) - set(mine))]
    for step_id in sorted(set(mine) & set(now)):
        a, b = mine[step_id], now[step_id]
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                lines.append(
                    f"  step {step_id}: {key} is {reprlib.repr(a.get(key))} in the plan, "
                    f"{reprlib.repr(b.get(key))} in a fresh plan"
                )
    edges_a, edges_b = set(approved.graph.edges()), set(fresh.graph.edges())
    lines += [f"  edge {a} -> {b}: only in the plan" for a, b in sorted(edges_a - edges_b)]
    lines += [f"  edge {a} -> {b}: only in a fresh plan" for a, b in sorted(edges_b - edges_a)]
    return "\n".join(lines) if lines else None


def _differ_error(differ: str, plan_file: str | None) -> StalePlanError:
    what = f"Saved plan {plan_file}" if plan_file else "The approved plan"
    return StalePlanError(
        f"{what} does not hold the steps hactl plans for these same hosts; nothing was done.\n"
        + differ,
        hint="the file was edited, or made by another hactl version: plan again "
        "(`hactl plan -f SPEC -o FILE`), review it, and apply the new file",
    )


def _stale_error(stale: str, saved: bool) -> StalePlanError:
    if saved:
        return StalePlanError(
            f"Saved plan is stale: the hosts changed since it was made.\n{stale}",
            hint="plan again (`hactl plan -f SPEC -o FILE`), review it, and apply the new file",
        )
    return StalePlanError(
        "The hosts changed while the plan waited for approval; nothing was done.\n" + stale,
        hint="run `hactl apply` again and review the new plan",
    )


async def _check_unchanged(
    opts: Options, cluster: Cluster, get: Transports, opened: Opened, observed: Observed
) -> None:
    """Nothing to do: ``hactl check`` once, on the facts the plan was just made from (no second
    probe; only the check's round trip on a master), without settling (nothing changed)."""
    report = await run_check(cluster, get, opened, observed=observed)
    opts.echo(report.render_text())
    if not report.healthy:
        raise HactlError(
            "the cluster matches the spec but `hactl check` reports problems (above)",
            hint="fix what check names, then run `hactl apply` again",
        )


async def _execute(
    opts: Options,
    cluster: Cluster,
    plan: Plan,
    get: Transports,
    run_id: str,
    anchor: str,
    gate: Callable[[str], Awaitable[str | None]] | None = None,
) -> ApplyResult:
    path = journal_path(anchor, cluster.metadata.name, run_id)
    reporter_cm: AbstractContextManager[Reporter | None] = (
        opts.reporter() if opts.reporter else nullcontext(None)
    )
    with Journal(path) as journal, reporter_cm as reporter:
        engine = Engine(
            plan.graph.g,
            cluster=cluster,
            transports=get,
            secrets=RunSecrets(),
            parallelism=opts.parallelism,
            retry=opts.retry,
            reporter=reporter,
            journal=journal,
            run_id=run_id,
            plan_id=plan_id(plan),
            gate=gate,
            check=run_check,
            check_settle=opts.check_settle,
        )
        result = await engine.run()
    opts.echo(f"Journal: {path}")
    return result
