"""The apply engine over fake steps: order, parallelism bound, retries, failures, timeouts."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import pytest

from hactl.apply import Engine, RetryPolicy, StepResult, count_changes, failure_report, plan_steps
from hactl.errors import CommandError, HactlError, UnreachableError
from hactl.journal import Journal, journal_critical_path, read_journal
from hactl.plan.step import RunSecrets, Step, StepContext
from hactl.sensitive import MASK, Sensitive
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.transport.fake import FakeTransport

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return load_file(ROOT / "specs" / "lab.yaml").cluster


@dataclass
class Tracker:
    running: int = 0
    max_running: int = 0
    events: list[tuple[str, str]] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)


Behaviour = Callable[["FakeStep", StepContext, int], Awaitable[None]]


async def _ok(step: FakeStep, ctx: StepContext, attempt: int) -> None:
    await asyncio.sleep(0)


@dataclass(frozen=True)
class FakeStep(Step):
    kind = "fake"
    tracker: Tracker = field(default_factory=Tracker, compare=False, repr=False)
    behaviour: Behaviour = field(default=_ok, compare=False, repr=False)

    async def run(self, ctx: StepContext) -> None:
        t = self.tracker
        attempt = t.attempts[self.id] = t.attempts.get(self.id, 0) + 1
        t.running += 1
        t.max_running = max(t.max_running, t.running)
        t.events.append(("start", self.id))
        try:
            await self.behaviour(self, ctx, attempt)
        finally:
            t.running -= 1
            t.events.append(("end", self.id))


def make_plan(
    tracker: Tracker,
    edges: list[tuple[str, str]],
    nodes: list[str] | None = None,
    behaviours: dict[str, Behaviour] | None = None,
    **step_fields: object,
) -> nx.DiGraph:
    """A planner-shaped DAG: nodes are step ids with a ``step`` attribute."""
    graph: nx.DiGraph = nx.DiGraph()
    names = list(nodes or [])
    for a, b in edges:
        names += [a, b]
    for name in dict.fromkeys(names):
        step = FakeStep(
            id=name,
            host=f"host-{name}",
            title=f"Do {name}",
            reason="test",
            tracker=tracker,
            behaviour=(behaviours or {}).get(name, _ok),
            **step_fields,  # type: ignore[arg-type]
        )
        graph.add_node(name, step=step)
    graph.add_edges_from(edges)
    return graph


def engine(cluster: Cluster, plan: nx.DiGraph, **kwargs: object) -> Engine:
    fake = FakeTransport("any")
    return Engine(plan, cluster=cluster, transports=lambda _h: fake, **kwargs)  # type: ignore[arg-type]


async def no_sleep(_delay: float) -> None:
    await asyncio.sleep(0)


async def test_steps_start_only_after_all_predecessors_succeeded(cluster: Cluster) -> None:
    t = Tracker()
    edges = [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("d", "e"), ("x", "e")]
    result = await engine(cluster, make_plan(t, edges), parallelism=4).run()
    assert result.ok
    assert set(result.results) == {"a", "b", "c", "d", "e", "x"}
    for before, after in edges:
        assert t.events.index(("end", before)) < t.events.index(("start", after))


async def test_parallelism_bound_is_never_exceeded_and_is_reached(cluster: Cluster) -> None:
    t = Tracker()

    async def slow(step: FakeStep, ctx: StepContext, attempt: int) -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    names = [f"s{i:02d}" for i in range(25)]
    plan = make_plan(t, [], nodes=names, behaviours=dict.fromkeys(names, slow))
    result = await engine(cluster, plan, parallelism=3).run()
    assert result.ok
    assert t.max_running == 3


async def test_default_parallelism_comes_from_the_spec(cluster: Cluster) -> None:
    t = Tracker()
    names = [f"s{i:02d}" for i in range(30)]

    async def slow(step: FakeStep, ctx: StepContext, attempt: int) -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    plan = make_plan(t, [], nodes=names, behaviours=dict.fromkeys(names, slow))
    await engine(cluster, plan).run()
    assert t.max_running == cluster.apply.parallelism == 10


async def test_independent_branches_run_concurrently(cluster: Cluster) -> None:
    """Each branch waits for the other to have started: only concurrency can finish this."""
    t = Tracker()
    started = {"left": asyncio.Event(), "right": asyncio.Event()}

    def meet(me: str, other: str) -> Behaviour:
        async def run(step: FakeStep, ctx: StepContext, attempt: int) -> None:
            started[me].set()
            await started[other].wait()

        return run

    plan = make_plan(
        t,
        [("root", "left"), ("root", "right")],
        behaviours={"left": meet("left", "right"), "right": meet("right", "left")},
        timeout=5.0,
    )
    result = await engine(cluster, plan, parallelism=2).run()
    assert result.ok


async def test_transient_failure_is_retried_with_backoff_then_succeeds(cluster: Cluster) -> None:
    t = Tracker()
    delays: list[float] = []

    async def flaky(step: FakeStep, ctx: StepContext, attempt: int) -> None:
        if attempt < 3:
            raise UnreachableError("connection reset", host=step.host)

    async def record(delay: float) -> None:
        delays.append(delay)

    plan = make_plan(t, [("a", "b")], behaviours={"a": flaky})
    policy = RetryPolicy(attempts=5, base_delay=1.0, max_delay=10.0, budget=60.0, jitter=0.5)
    result = await engine(cluster, plan, retry=policy, sleep=record, rng=random.Random(7)).run()
    assert result.ok
    assert result.results["a"].attempts == 3
    assert t.attempts == {"a": 3, "b": 1}
    assert len(delays) == 2
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0


async def test_transient_failure_gives_up_within_its_budget(cluster: Cluster) -> None:
    t = Tracker()

    async def down(step: FakeStep, ctx: StepContext, attempt: int) -> None:
        raise CommandError("etcd leader changed", host=step.host, transient=True)

    plan = make_plan(t, [("a", "b")], behaviours={"a": down})
    policy = RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.001, budget=60.0)
    result = await engine(cluster, plan, retry=policy, sleep=no_sleep).run()
    assert [r.step.id for r in result.failed] == ["a"]
    assert result.results["a"].attempts == 4
    assert "gave up after 4 attempts" in result.results["a"].error
    assert result.results["b"].outcome == "skipped"

    # the seconds budget bounds retries too
    t2 = Tracker()
    plan2 = make_plan(t2, [], nodes=["a"], behaviours={"a": down})
    tight = RetryPolicy(attempts=100, base_delay=5.0, max_delay=5.0, budget=1.0)
    result2 = await engine(cluster, plan2, retry=tight, sleep=no_sleep).run()
    assert result2.results["a"].attempts == 1
    assert not result2.ok


async def test_permanent_failure_stops_its_branch_and_others_finish(cluster: Cluster) -> None:
    t = Tracker()
    token = Sensitive("abcdef.0123456789abcdef")
    secrets = RunSecrets(bootstrap_token=token)

    async def broken(step: FakeStep, ctx: StepContext, attempt: int) -> None:
        await asyncio.sleep(0)
        raise CommandError(
            "kubeadm join failed",
            host=step.host,
            argv=("kubeadm", "join", "k8s-api.lab:6443", "--token", MASK),
            exit_status=1,
            stderr=f"error: token {token.reveal()} is invalid\n[preflight] stop",
        )

    edges = [("a", "b"), ("b", "c"), ("x", "y"), ("y", "z"), ("a", "w")]
    plan = make_plan(t, edges, behaviours={"b": broken})
    result = await engine(cluster, plan, secrets=secrets).run()
    outcomes = {k: r.outcome for k, r in result.results.items()}
    assert outcomes == {
        "a": "ok",
        "b": "failed",
        "c": "skipped",
        "w": "ok",
        "x": "ok",
        "y": "ok",
        "z": "ok",
    }
    assert result.results["b"].attempts == 1
    assert result.results["c"].skipped_because == "b"
    assert ("start", "c") not in t.events

    error = failure_report(result)
    text = str(error)
    assert "host-b: Do b [b]" in text
    assert "command: kubeadm join k8s-api.lab:6443 --token '(sensitive value)'" in text
    assert "exit status: 1" in text
    assert "error: token (sensitive value) is invalid" in text
    assert token.reveal() not in text
    assert "host-c: Do c [c]" in text  # listed as skipped
    assert error.hint and "hactl apply again" in error.hint
    assert result.summary().startswith("Apply failed: 1 failed, 1 skipped;")


async def test_a_step_that_overruns_its_timeout_fails_without_retry(cluster: Cluster) -> None:
    t = Tracker()

    async def hang(step: FakeStep, ctx: StepContext, attempt: int) -> None:
        await asyncio.sleep(30)

    async def own_timeout(step: FakeStep, ctx: StepContext, attempt: int) -> None:
        raise TimeoutError("waited for /readyz")

    plan = make_plan(
        t, [("a", "b")], nodes=["c"], behaviours={"a": hang, "c": own_timeout}, timeout=0.05
    )
    result = await engine(cluster, plan).run()
    assert result.results["a"].outcome == "failed"
    assert result.results["a"].error == "timed out after 0.05s"
    assert result.results["a"].attempts == 1
    assert result.results["b"].outcome == "skipped"
    # a TimeoutError raised by the step itself is reported as it is
    assert result.results["c"].error == "TimeoutError: waited for /readyz"


async def test_a_bug_in_a_step_is_reported_not_raised(cluster: Cluster) -> None:
    t = Tracker()

    async def bug(step: FakeStep, ctx: StepContext, attempt: int) -> None:
        raise KeyError("oops")

    result = await engine(cluster, make_plan(t, [], nodes=["a"], behaviours={"a": bug})).run()
    assert result.results["a"].error == "KeyError: 'oops'"


async def test_long_steps_report_that_they_are_still_running(cluster: Cluster) -> None:
    t = Tracker()
    beats: list[tuple[str, float]] = []

    class Reporter:
        def started(self, step: Step, attempt: int) -> None: ...

        def retrying(self, step: Step, attempt: int, delay: float, error: str) -> None: ...

        def still_running(self, step: Step, elapsed: float) -> None:
            beats.append((step.id, elapsed))

        def finished(self, result: StepResult) -> None: ...

    async def slow(step: FakeStep, ctx: StepContext, attempt: int) -> None:
        while len(beats) < 2:
            await asyncio.sleep(0.005)

    plan = make_plan(t, [], nodes=["long"], behaviours={"long": slow}, timeout=5.0)
    result = await engine(cluster, plan, heartbeat=0.01, reporter=Reporter()).run()
    assert result.ok
    assert [b[0] for b in beats[:2]] == ["long", "long"]
    assert beats[1][1] > beats[0][1]


def test_summary_counts_changes_by_address() -> None:
    def res(i: str, action: str, address: str, outcome: str = "ok") -> StepResult:
        step = Step(id=i, host=None, title=i, reason="", action=action, address=address)  # type: ignore[arg-type]
        return StepResult(step, outcome)  # type: ignore[arg-type]

    results = {
        r.step.id: r
        for r in [
            res("m1", "create", "etcd.member[etcd04]"),
            res("m2", "create", "etcd.member[etcd04]"),  # several steps, one change
            res("lb", "update", "lb[lb01].haproxy_cfg"),
            res("rm", "delete", "etcd.member[etcd09]"),
            res("rp", "replace", "master[master03]"),
            res("v", "read", "verify"),
            res("w1", "create", "worker[worker01]"),
            res("w1b", "create", "worker[worker01]", "failed"),  # not complete: not counted
        ]
    }
    assert count_changes(results) == (2, 1, 2)


async def test_summary_line_and_journal(cluster: Cluster, tmp_path: Path) -> None:
    t = Tracker()
    plan = make_plan(t, [("a", "b"), ("a", "c")], action="create")
    path = tmp_path / "journal" / "lab" / "run1.jsonl"
    with Journal(path) as journal:
        result = await engine(cluster, plan, journal=journal, run_id="run1", plan_id="p1").run()
    assert result.summary().startswith("Apply complete: 3 added, 0 changed, 0 removed in ")
    assert result.summary().endswith("s.")
    records = read_journal(path)
    events = [r["event"] for r in records]
    assert events[0] == "run_start" and events[-1] == "run_end"
    assert events.count("step_start") == 3 and events.count("step_end") == 3
    assert records[0]["run_id"] == "run1" and records[0]["plan_id"] == "p1"
    assert records[0]["parallelism"] == 10
    ends = {r["id"]: r for r in records if r["event"] == "step_end"}
    assert ends["b"]["depends_on"] == ["a"]
    assert ends["a"]["outcome"] == "ok" and ends["a"]["attempts"] == 1
    assert ends["a"]["host"] == "host-a"
    assert ends["a"]["end_mono"] >= ends["a"]["start_mono"]
    assert ends["a"]["start_wall"].endswith("+00:00")
    assert ends["b"]["start_mono"] >= ends["a"]["end_mono"]
    assert records[-1]["added"] == 3 and records[-1]["outcome"] == "ok"
    path_ = journal_critical_path(records)
    assert path_.steps[0] == "a" and len(path_.steps) == 2


def test_plan_steps_accepts_step_nodes_and_rejects_cycles() -> None:
    a = Step(id="a", host=None, title="a", reason="")
    b = Step(id="b", host="h", title="b", reason="")
    g: nx.DiGraph = nx.DiGraph()
    g.add_edge(a, b)
    norm = plan_steps(g)
    assert list(norm.edges) == [("a", "b")] and norm.nodes["b"]["step"] is b
    g.add_edge(b, a)
    with pytest.raises(HactlError, match="cycle"):
        plan_steps(g)


async def test_parallelism_must_be_positive(cluster: Cluster) -> None:
    with pytest.raises(HactlError, match="at least 1"):
        engine(cluster, make_plan(Tracker(), [], nodes=["a"]), parallelism=-1)


async def test_a_cancelled_run_says_so_in_the_journal(cluster: Cluster, tmp_path: Path) -> None:
    t = Tracker()
    started = asyncio.Event()

    async def hang(step: FakeStep, ctx: StepContext, attempt: int) -> None:
        started.set()
        await asyncio.sleep(30)

    plan = make_plan(t, [("a", "b")], behaviours={"a": hang})
    path = tmp_path / "run.jsonl"
    with Journal(path) as journal:
        task = asyncio.create_task(engine(cluster, plan, journal=journal).run())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    last = read_journal(path)[-1]
    assert last["event"] == "run_end" and last["outcome"] == "cancelled"
    assert last["running"] == ["a"]
