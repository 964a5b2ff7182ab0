"""The apply engine: run a plan's DAG of steps with bounded parallelism, retries and timeouts.

A step starts as soon as every step before it succeeded; independent branches run concurrently,
at most ``parallelism`` steps at a time (``asyncio.TaskGroup`` + a semaphore). Each attempt of a
step runs under ``asyncio.timeout(step.timeout)``. A :class:`~hactl.errors.HactlError` whose
``transient`` flag is set is retried with exponential backoff and jitter inside a bounded budget
(:class:`RetryPolicy`); any other failure is permanent: the step's descendants are skipped while
independent branches finish. The engine never raises for a failed step: it returns an
:class:`ApplyResult`; :func:`failure_report` turns the failures into one
:class:`~hactl.errors.ApplyError` naming each step, host, command and stderr (secrets masked).

Progress goes to a :class:`Reporter` (the CLI draws a live view or plain lines), to structlog and
to the run's :class:`~hactl.journal.Journal`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import networkx as nx

from hactl.apply.results import (
    ApplyResult,
    NullReporter,
    Reporter,
    RetryPolicy,
    StepResult,
    StepTimeoutError,
    count_changes,
    describe_error,
)
from hactl.check import Report, run_check
from hactl.errors import HactlError
from hactl.journal import Journal, new_run_id, now_wall
from hactl.log import get_logger
from hactl.plan.step import RunSecrets, Step

if TYPE_CHECKING:
    from hactl.spec.models import Cluster
    from hactl.transport.base import Transport

HEARTBEAT_SECONDS = 10.0


CheckRunner = Callable[..., Awaitable[Report]]
"""``hactl.check.run_check``'s signature: (cluster, transports, opened, *, settle, on_report,
prefer)."""


class _StepContext:
    """What ``Step.run`` sees: the cluster, the run's secrets, transports and a bound logger,
    and (for the Verify step) the run's one ``hactl check``."""

    def __init__(
        self,
        cluster: Cluster,
        secrets: RunSecrets,
        transports: Callable[[str], Transport],
        step: Step,
        run_id: str,
        check: Callable[[Step, float], Awaitable[Report]],
    ) -> None:
        self.cluster = cluster
        self.secrets = secrets
        self._transports = transports
        self._step = step
        self._check = check
        self._logger = get_logger(run_id=run_id, step=step.id, host=step.host)

    def transport(self, host: str) -> Transport:
        return self._transports(host)

    def log(self, event: str, **fields: object) -> None:
        self._logger.info(event, **fields)

    async def check_cluster(self, *, settle: float) -> Report:
        """``hactl check`` on the run's connections, repeated while unhealthy for up to
        ``settle`` seconds; journaled (``check``) and kept as the run's report."""
        return await self._check(self._step, settle)


def plan_steps(plan: nx.DiGraph) -> nx.DiGraph:
    """Normalise a plan to a DiGraph keyed by step id with attribute ``step``.

    Accepts nodes that are step ids carrying a ``step`` attribute (the planner's form) or nodes
    that are :class:`Step` objects themselves."""
    graph: nx.DiGraph = nx.DiGraph()
    ids: dict[Any, str] = {}
    for node, data in plan.nodes(data=True):
        step = data.get("step", node)
        if not isinstance(step, Step):
            raise TypeError(f"plan node {node!r} carries no Step")
        ids[node] = step.id
        graph.add_node(step.id, step=step)
    graph.add_edges_from((ids[a], ids[b]) for a, b in plan.edges)
    if not nx.is_directed_acyclic_graph(graph):
        raise HactlError("the plan has a dependency cycle", hint="report this as a bug")
    return graph


def _sort_key(step: Step) -> tuple[int, str, str]:
    return (step.order, step.host or "", step.id)


class Engine:
    """One apply run. Build it, then ``await engine.run()``."""

    def __init__(
        self,
        plan: nx.DiGraph,
        *,
        cluster: Cluster,
        transports: Callable[[str], Transport],
        secrets: RunSecrets | None = None,
        parallelism: int | None = None,
        retry: RetryPolicy | None = None,
        reporter: Reporter | None = None,
        journal: Journal | None = None,
        run_id: str | None = None,
        plan_id: str | None = None,
        heartbeat: float = HEARTBEAT_SECONDS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        gate: Callable[[str], Awaitable[str | None]] | None = None,
        check: CheckRunner = run_check,
        check_settle: float | None = None,
    ) -> None:
        self.graph = plan_steps(plan)
        self.cluster = cluster
        self.transports = transports
        self.secrets = secrets if secrets is not None else RunSecrets()
        self.parallelism = parallelism or cluster.apply.parallelism
        if self.parallelism < 1:
            raise HactlError(f"parallelism must be at least 1, not {self.parallelism}")
        self.retry = retry or RetryPolicy()
        self.reporter: Reporter = reporter or NullReporter()
        self.journal = journal or Journal(None)
        self.run_id = run_id or new_run_id()
        self.plan_id = plan_id
        self.heartbeat = heartbeat
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._log = get_logger(run_id=self.run_id, cluster=cluster.metadata.name)
        self._results: dict[str, StepResult] = {}
        self.gate = gate
        """Asked (with the step's kind) before every attempt: a reason not to start (the cluster
        lock was lost), or None. Once it gives a reason the run starts nothing more."""
        self.stopped: str | None = None
        self.check = check
        self.check_settle = check_settle
        """At most this many seconds of settling for the closing check (None: the step's own)."""
        self.report: Report | None = None
        """The closing check's report, once the Verify step ran it."""

    async def _may_start(self, step: Step) -> bool:
        """False once the gate refused (lock lost): no new step or attempt starts after that;
        steps already running are not cut off mid-command."""
        if self.stopped is None and self.gate is not None:
            try:
                reason = await self.gate(step.kind)
            except Exception as exc:  # a lock that cannot be checked is not known to be held
                reason = f"the cluster lock could not be checked: {exc}"
            if reason is not None:
                self.stopped = reason
                self.journal.write("run_stopping", reason=reason, before=step.id, wall=now_wall())
                self._log.error("apply.stopping", reason=reason, before=step.id)
        return self.stopped is None

    def step(self, step_id: str) -> Step:
        step: Step = self.graph.nodes[step_id]["step"]
        return step

    async def run(self) -> ApplyResult:
        start = time.monotonic()
        self.journal.write(
            "run_start",
            run_id=self.run_id,
            cluster=self.cluster.metadata.name,
            plan_id=self.plan_id,
            parallelism=self.parallelism,
            steps=self.graph.number_of_nodes(),
            wall=now_wall(),
            mono=start,
        )
        self._log.info(
            "apply.start", steps=self.graph.number_of_nodes(), parallelism=self.parallelism
        )
        semaphore = asyncio.Semaphore(self.parallelism)
        waiting = {n: set(self.graph.predecessors(n)) for n in self.graph.nodes}

        try:
            async with asyncio.TaskGroup() as group:

                def launch(ids: list[str]) -> None:
                    for step_id in sorted(ids, key=lambda i: _sort_key(self.step(i))):
                        group.create_task(one(step_id), name=f"step:{step_id}")

                async def one(step_id: str) -> None:
                    result = await self._run_step(self.step(step_id), semaphore)
                    if result.attempts == 0:
                        return  # not started: the apply stopped (lock lost)
                    self._finish(result)
                    if result.outcome == "ok":
                        ready = []
                        for succ in self.graph.successors(step_id):
                            waiting[succ].discard(step_id)
                            if not waiting[succ] and succ not in self._results:
                                ready.append(succ)
                        launch(ready)
                    else:
                        self._skip_descendants(step_id)

                launch([n for n, preds in waiting.items() if not preds])
        except asyncio.CancelledError:
            self.journal.write(
                "run_end",
                outcome="cancelled",
                duration=round(time.monotonic() - start, 6),
                wall=now_wall(),
                mono=time.monotonic(),
                running=sorted(
                    n for n in self.graph.nodes if n not in self._results and not waiting[n]
                ),
            )
            self._log.warning("apply.cancelled")
            raise

        duration = time.monotonic() - start
        added, changed, removed = count_changes(self._results)
        result = ApplyResult(self.run_id, dict(self._results), duration, added, changed, removed)
        result.stopped = self.stopped
        result.report = self.report
        result.not_started = sorted(n for n in self.graph.nodes if n not in self._results)
        outcome = "stopped" if self.stopped else "ok" if result.ok else "failed"
        self.journal.write(
            "run_end",
            outcome=outcome,
            reason=self.stopped,
            not_started=result.not_started,
            duration=round(duration, 6),
            wall=now_wall(),
            mono=time.monotonic(),
            added=added,
            changed=changed,
            removed=removed,
            failed=[r.step.id for r in result.failed],
            skipped=[r.step.id for r in result.skipped],
        )
        self._log.info("apply.end", outcome=outcome, duration=round(duration, 3))
        return result

    async def _run_step(self, step: Step, semaphore: asyncio.Semaphore) -> StepResult:
        result = StepResult(step, "failed")
        ctx = _StepContext(
            self.cluster, self.secrets, self.transports, step, self.run_id, self._check_cluster
        )
        text = ""
        while True:
            async with semaphore:
                if not await self._may_start(step):
                    if result.attempts:  # a retry that is not made: the step failed
                        result.error = f"{text}\nnot retried: the apply stopped: {self.stopped}"
                    break
                result.attempts += 1
                now = time.monotonic()
                if result.start is None:
                    result.start = now
                self.journal.write(
                    "step_start",
                    id=step.id,
                    host=step.host,
                    attempt=result.attempts,
                    wall=now_wall(),
                    mono=now,
                )
                self._log.info("step.start", step=step.id, host=step.host, attempt=result.attempts)
                self.reporter.started(step, result.attempts)
                error = await self._attempt(step, ctx, now)
            if error is None:
                result.outcome = "ok"
                break
            text = describe_error(error, self.secrets)
            transient = isinstance(error, HactlError) and error.transient
            delay = self.retry.delay(result.attempts, self._rng)
            spent = time.monotonic() - result.start
            if (
                not transient
                or result.attempts >= self.retry.attempts
                or spent + delay > self.retry.budget
            ):
                if transient:
                    text = f"gave up after {result.attempts} attempts in {spent:.0f}s: {text}"
                result.error, result.exception = text, error
                break
            self.journal.write(
                "step_retry",
                id=step.id,
                host=step.host,
                attempt=result.attempts,
                delay=round(delay, 3),
                error=text,
            )
            self._log.warning(
                "step.retry",
                step=step.id,
                host=step.host,
                attempt=result.attempts,
                delay=round(delay, 3),
                error=text,
            )
            self.reporter.retrying(step, result.attempts, delay, text)
            await self._sleep(delay)
        result.end = time.monotonic()
        return result

    async def _check_cluster(self, step: Step, settle: float) -> Report:
        """The run's ``hactl check`` (asked by the Verify step): on the run's connections, every
        gather logged (``check.attempt``), the final report journaled (``check``) and kept."""
        if self.check_settle is not None:
            settle = min(settle, self.check_settle)
        opened: dict[str, Transport | BaseException] = {}
        for host in self.cluster.all_hosts():
            try:
                opened[host.name] = self.transports(host.name)
            except Exception as exc:  # the probe reports the host unreachable with this
                opened[host.name] = exc
        attempts = 0

        def seen(report: Report) -> None:
            nonlocal attempts
            attempts += 1
            problems = [f"{f.subject}: {f.message}" for f in report.problems]
            self._log.info(
                "check.attempt",
                step=step.id,
                attempt=attempts,
                healthy=report.healthy,
                problems=problems,
            )

        start = time.monotonic()
        report = await self.check(
            self.cluster, self.transports, opened, settle=settle, on_report=seen,
            prefer=getattr(step, "via", "") or None,  # the master the Verify step names
        )
        end = time.monotonic()
        self.report = report
        self.journal.write(
            "check",
            step=step.id,
            attempts=attempts,
            settle=settle,
            start_mono=start,
            end_mono=end,
            duration=round(end - start, 6),
            wall=now_wall(),
            **report.to_data(),
        )
        self._log.info(
            "check.end", step=step.id, healthy=report.healthy, attempts=attempts,
            duration=round(end - start, 3),
        )  # fmt: skip
        return report

    async def _attempt(self, step: Step, ctx: _StepContext, started: float) -> BaseException | None:
        beat = asyncio.create_task(self._heartbeat(step, started), name=f"heartbeat:{step.id}")
        deadline = asyncio.timeout(step.timeout)
        try:
            async with deadline:
                await step.run(ctx)
        except Exception as exc:  # every failure of a step is reported, never propagated
            if isinstance(exc, TimeoutError) and deadline.expired():
                return StepTimeoutError(f"timed out after {step.timeout:g}s")
            return exc
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        return None

    async def _heartbeat(self, step: Step, started: float) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            elapsed = time.monotonic() - started
            self._log.info(
                "step.still_running", step=step.id, host=step.host, elapsed=round(elapsed)
            )
            self.reporter.still_running(step, elapsed)

    def _finish(self, result: StepResult) -> None:
        step = result.step
        self._results[step.id] = result
        self.journal.write(
            "step_end",
            id=step.id,
            host=step.host,
            title=step.title,
            action=step.action,
            address=step.address,
            depends_on=sorted(self.graph.predecessors(step.id)),
            outcome=result.outcome,
            attempts=result.attempts,
            start_mono=result.start,
            end_mono=result.end,
            duration=round(result.duration, 6),
            start_wall=None if result.start is None else _wall_at(result.start),
            end_wall=None if result.end is None else _wall_at(result.end),
            error=result.error or None,
            skipped_because=result.skipped_because,
        )
        level = self._log.info if result.outcome == "ok" else self._log.error
        level(
            "step.end",
            step=step.id,
            host=step.host,
            outcome=result.outcome,
            attempts=result.attempts,
            duration=round(result.duration, 3),
            error=result.error or None,
        )
        self.reporter.finished(result)

    def _skip_descendants(self, failed: str) -> None:
        for node in sorted(
            nx.descendants(self.graph, failed), key=lambda i: _sort_key(self.step(i))
        ):
            if node not in self._results:
                self._finish(StepResult(self.step(node), "skipped", skipped_because=failed))


def _wall_at(mono: float) -> str:
    """The wall-clock time (ISO, UTC) that a ``time.monotonic()`` reading corresponds to."""
    return datetime.fromtimestamp(time.time() - (time.monotonic() - mono), UTC).isoformat(
        timespec="microseconds"
    )
