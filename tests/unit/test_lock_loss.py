"""M1: an apply whose cluster lock is lost stops at the next step boundary; the lock hosts run the
real lock script under /bin/sh (tests/unit/lockhosts.py).

The review's reproduction: A holds the lock and runs steps; B breaks the lock (``hactl unlock``)
and takes it; A went on starting steps (`A in -> A step -> B in -> A step -> A step …`), so two
applies changed the cluster at once. Now A finishes the step it is in and starts nothing more."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import networkx as nx
import pytest
from lockhosts import PLACEHOLDER, Hosts

from hactl.apply import Engine, failure_report
from hactl.apply.results import LockLostApplyError
from hactl.errors import UnreachableError
from hactl.lock import ClusterLock, LockOwner, lock_hosts
from hactl.plan.step import Step, StepContext
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.transport.fake import FakeTransport

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return load_file(ROOT / "specs" / "lab.yaml").cluster


@pytest.fixture
def hosts(tmp_path: Path, cluster: Cluster) -> Hosts:
    return Hosts(tmp_path, lock_hosts(cluster))


def make_lock(
    cluster: Cluster, hosts: Hosts, who: str, ttl: float = 900.0, **kw: object
) -> ClusterLock:
    base = LockOwner.new(command=f"hactl apply ({who})", ttl=ttl)
    owner = LockOwner(base.token, who, base.pid, base.since, base.ttl, None, None, base.command)
    return ClusterLock(cluster, hosts, owner, root=PLACEHOLDER, wait=5, **kw)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Logged(Step):
    """A step that writes "<who> <id>" to a shared log, and may wait for a gate to open."""

    kind = "unit-logged"
    who: str = "A"
    log: list[str] = field(default_factory=list, compare=False, repr=False)
    entered: asyncio.Event | None = field(default=None, compare=False, repr=False)
    release: asyncio.Event | None = field(default=None, compare=False, repr=False)

    async def run(self, ctx: StepContext) -> None:
        self.log.append(f"{self.who} {self.id}")
        if self.entered is not None and self.release is not None:
            self.entered.set()
            await self.release.wait()


@dataclass(frozen=True)
class MemberChange(Logged):
    kind = "add_etcd_member"


def chain(steps: list[Step]) -> nx.DiGraph:
    graph: nx.DiGraph = nx.DiGraph()
    for step in steps:
        graph.add_node(step.id, step=step)
    graph.add_edges_from((a.id, b.id) for a, b in pairwise(steps))
    return graph


async def test_a_broken_lock_stops_the_apply_at_the_next_step_boundary(
    cluster: Cluster, hosts: Hosts
) -> None:
    log: list[str] = []
    entered, release = asyncio.Event(), asyncio.Event()
    steps: list[Step] = [
        Logged("s1", "master01", "step 1", "r", log=log),
        Logged("s2", "master01", "step 2", "r", log=log, entered=entered, release=release),
        *(Logged(f"s{i}", "master01", f"step {i}", "r", log=log) for i in range(3, 6)),
    ]
    a = make_lock(cluster, hosts, "alice@ops1")
    await a.acquire()
    log.append("A in")
    engine = Engine(
        chain(steps), cluster=cluster, transports=FakeTransport, gate=a.gate, heartbeat=60
    )
    run = asyncio.create_task(engine.run())
    await asyncio.wait_for(entered.wait(), 5)  # A is inside s2

    b = make_lock(cluster, hosts, "bob@ci")
    await b.break_lock()  # `hactl unlock --force` while A runs
    await b.acquire()
    log.append("B in")
    await a.refresh()  # A's next renewal (the refresher's tick) finds its record gone
    assert a.lost is not None and "our lock record was removed or replaced" in a.lost
    assert "bob@ci" in a.lost  # and says who holds it now
    release.set()  # s2 finishes: it is not cut off mid-command
    result = await asyncio.wait_for(run, 5)

    log.append("B step")
    assert log == ["A in", "A s1", "A s2", "B in", "B step"]  # A started nothing after B came in
    assert not result.ok and result.stopped == a.lost
    assert result.not_started == ["s3", "s4", "s5"]
    assert [r.outcome for r in result.results.values()] == ["ok", "ok"]
    assert result.summary().startswith("Apply STOPPED (the cluster lock was lost): 3 step(s)")
    error = failure_report(result)
    assert isinstance(error, LockLostApplyError)
    text = str(error)
    assert text.startswith("the apply STOPPED because its cluster lock was lost: etcd01: ")
    assert "- s3" in text and error.hint and "hactl unlock -f SPEC" in error.hint
    events = [r["event"] for r in engine.journal.records]
    assert events[-2:] == ["run_stopping", "run_end"]
    assert engine.journal.records[-1]["outcome"] == "stopped"
    await a.release()  # leaves bob's lock alone
    assert hosts.owner("etcd01")["who"] == "bob@ci"
    await b.release()


async def test_the_refresher_itself_notices_the_loss(cluster: Cluster, hosts: Hosts) -> None:
    """The same through ``async with ClusterLock`` and its renewal task (ttl 3 s: every 1 s)."""
    async with make_lock(cluster, hosts, "alice@ops1", ttl=3.0) as a:
        await make_lock(cluster, hosts, "bob@ci").break_lock()
        for _ in range(40):
            if a.lost:
                break
            await asyncio.sleep(0.1)
        assert a.lost is not None and await a.gate("unit-logged") == a.lost


async def test_renewals_failing_for_half_the_ttl_lose_the_lock(
    cluster: Cluster, hosts: Hosts
) -> None:
    now = [1000.0]
    a = make_lock(cluster, hosts, "alice@ops1", ttl=60.0, clock=lambda: now[0])
    await a.acquire()
    for name in a.held_on:  # the lock hosts are cut off from A
        hosts.fakes[name].fail_with = UnreachableError("no route to host", host=name)
    now[0] += 29
    await a.refresh()
    assert a.lost is None and await a.gate("unit-logged") is None
    now[0] += 2  # 31 s > ttl/2 without a majority confirming the record
    assert await a.gate("unit-logged") is not None  # judged at the boundary, without a renewal
    assert a.lost is not None and "could not be renewed on a majority" in a.lost
    assert "31s" in a.lost and "TTL of 60s" in a.lost
    for name in list(a.held_on):
        hosts.fakes[name].fail_with = None
    await a.refresh()
    assert a.lost is not None  # once lost, it stays lost for this apply
    await a.release()


async def test_one_successful_renewal_resets_the_clock(cluster: Cluster, hosts: Hosts) -> None:
    now = [0.0]
    a = make_lock(cluster, hosts, "alice@ops1", ttl=60.0, clock=lambda: now[0])
    await a.acquire()
    hosts.fakes["etcd01"].fail_with = UnreachableError("reset", host="etcd01")
    now[0] += 25
    await a.refresh()  # one of two hosts: no majority confirmed
    hosts.fakes["etcd01"].fail_with = None
    now[0] += 4
    await a.refresh()  # both confirmed at t=29
    now[0] += 25
    assert await a.gate("unit-logged") is None  # 25 s since the last confirmation
    await a.release()


async def test_an_etcd_member_step_rechecks_the_lock_right_before_it_starts(
    cluster: Cluster, hosts: Hosts
) -> None:
    """No renewal ran since B broke the lock: the membership change is still not started."""
    log: list[str] = []
    a = make_lock(cluster, hosts, "alice@ops1")
    await a.acquire()
    steps: list[Step] = [
        Logged("s1", "master01", "step 1", "r", log=log),
        MemberChange("etcd.member[etcd04].add", "etcd01", "Add etcd04", "r", log=log),
    ]
    calls = len(hosts.fakes["etcd01"].calls)
    assert await a.gate("configure_haproxy") is None
    assert len(hosts.fakes["etcd01"].calls) == calls  # other steps cost no round trip

    async def s1_then_break(kind: str) -> str | None:
        if log == ["A s1"]:
            await make_lock(cluster, hosts, "bob@ci").break_lock()
        return await a.gate(kind)

    result = await Engine(
        chain(steps), cluster=cluster, transports=FakeTransport, gate=s1_then_break
    ).run()
    assert log == ["A s1"]
    assert result.not_started == ["etcd.member[etcd04].add"]
    assert result.stopped is not None and "removed or replaced" in result.stopped
    await a.release()


async def test_a_retry_is_not_made_once_the_lock_is_lost(cluster: Cluster) -> None:
    from hactl.apply import RetryPolicy

    lost: list[str] = []

    class Flaky(Logged):
        kind = "unit-flaky"

        async def run(self, ctx: StepContext) -> None:
            lost.append("lock lost meanwhile")
            raise UnreachableError("connection reset", host=self.host)

    async def gate(_kind: str) -> str | None:
        return "etcd01: our lock record was removed" if lost else None

    async def no_sleep(_s: float) -> None:
        return None

    result = await Engine(
        chain([Flaky("f", "master01", "flaky", "r")]),
        cluster=cluster,
        transports=FakeTransport,
        gate=gate,
        retry=RetryPolicy(attempts=5),
        sleep=no_sleep,
    ).run()
    (only,) = result.results.values()
    assert only.outcome == "failed" and only.attempts == 1
    assert "connection reset" in only.error and "not retried: the apply stopped" in only.error


async def test_a_lock_that_cannot_be_checked_stops_the_run_too(cluster: Cluster) -> None:
    log: list[str] = []

    async def broken_gate(kind: str) -> str | None:
        if log:
            raise RuntimeError("transport is closed")
        return None

    steps: list[Step] = [Logged(f"s{i}", "master01", f"step {i}", "r", log=log) for i in (1, 2)]
    result = await Engine(
        chain(steps), cluster=cluster, transports=FakeTransport, gate=broken_gate
    ).run()
    assert log == ["A s1"] and result.not_started == ["s2"]
    assert result.stopped == "the cluster lock could not be checked: transport is closed"
