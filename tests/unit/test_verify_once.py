"""Apply verifies once (issue 12 §2): the plan's last step (Verify) IS ``hactl check`` (the same
``run_check``: gather + evaluate), retried until healthy within its settle window; its report is
what apply prints and journals; nothing probes or checks after it. An apply with nothing to do
checks once on the facts its plan was made from (no second probe)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from stepctx import Ctx
from test_apply_flow import lock_runner

import hactl.apply.run as run
import hactl.probe
from hactl.apply.engine import Engine
from hactl.check import Finding, Report, run_check
from hactl.errors import ApplyError, HactlError, UnreachableError
from hactl.facts.model import Observed
from hactl.journal import Journal, read_journal
from hactl.plan.graph import StepGraph
from hactl.plan.planner import Plan, build_plan
from hactl.plan.step import Step, StepContext
from hactl.plan.steps.verify import GATHER_MARGIN, ClusterUnhealthyError, Verify
from hactl.plan.synthetic import Synthetic
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.transport.base import Result
from hactl.transport.fake import FakeTransport

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "specs" / "lab.yaml"
ENDPOINT = "k8s-api.lab:6443"


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return load_file(SPEC).cluster


def healthy(cluster: Cluster) -> Report:
    return Report(cluster.metadata.name, (Finding("api", "ok", ENDPOINT, "/readyz ok"),))


def unhealthy(cluster: Cluster) -> Report:
    return Report(
        cluster.metadata.name,
        (
            Finding("api", "ok", ENDPOINT, "/readyz ok"),
            Finding(
                "load_balancer",
                "error",
                "lb01",
                "backends not UP: master03 DOWN",
                "those API servers fail /readyz: check them and etcd",
            ),
        ),
    )


def verify_step(**changes: Any) -> Verify:
    fields: dict[str, Any] = {
        "id": "cluster.verify",
        "host": None,
        "title": "Verify the cluster",
        "reason": "every apply ends by checking what it built",
        "via": "master01",
        "address": "cluster",
    }
    return Verify(**{**fields, **changes})


# -- the step ---------------------------------------------------------------------------------


@dataclass
class CheckingCtx(Ctx):
    reports: list[Report] = field(default_factory=list)
    settles: list[float] = field(default_factory=list)

    async def check_cluster(self, *, settle: float) -> Report:
        self.settles.append(settle)
        return self.reports.pop(0)


async def test_the_step_is_the_check_and_settles_within_its_timeout(cluster: Cluster) -> None:
    ctx = CheckingCtx(cluster, reports=[healthy(cluster)])
    await verify_step().run(ctx)
    assert ctx.settles == [300.0 - GATHER_MARGIN]  # the planned timeout keeps the last gather
    assert ("cluster verified", {}) in ctx.events
    # the step runs no command of its own: every host is read by the check
    assert all(not fake.calls for fake in ctx.fakes.values())
    # what the plan prints for it is what it waits
    assert verify_step(timeout=200.0).commands()[-1].endswith("for at most 80 s")


async def test_an_unhealthy_report_fails_the_step_once_with_its_problems(
    cluster: Cluster,
) -> None:
    ctx = CheckingCtx(cluster, reports=[unhealthy(cluster)])
    with pytest.raises(ClusterUnhealthyError) as caught:
        await verify_step().run(ctx)
    error = caught.value
    assert not error.transient  # it already waited: the engine must not check again
    assert "Cluster 'lab' is NOT healthy (1 problem(s)):" in error.message
    assert "  - lb01: backends not UP: master03 DOWN" in error.message
    assert "next: those API servers fail /readyz" in error.message
    assert error.hint is not None and "hactl check -f SPEC" in error.hint


async def test_a_context_without_the_check_is_refused(cluster: Cluster) -> None:
    with pytest.raises(HactlError, match="cannot check the cluster"):
        await verify_step().run(Ctx(cluster))


# -- the one check loop -----------------------------------------------------------------------


def api_answer(now: datetime) -> str:
    leases = {
        "items": [
            {
                "metadata": {"name": name},
                "spec": {
                    "holderIdentity": "master01_x",
                    "renewTime": now.isoformat().replace("+00:00", "Z"),
                    "leaseDurationSeconds": 15,
                },
            }
            for name in ("kube-scheduler", "kube-controller-manager")
        ]
    }
    return (
        f"@@readyz\nok\n@@rc 0\n@@leases\n{json.dumps(leases)}\n@@rc 0\n"
        f"@@now\n{int(now.timestamp())}\n"
    )


def converged(cluster: Cluster) -> Observed:
    return Synthetic(cluster).converged().observed()


def with_lb_down(cluster: Cluster) -> Observed:
    from dataclasses import replace

    observed = converged(cluster)
    lb = observed.hosts["lb01"]
    assert lb.haproxy is not None
    servers = tuple(
        replace(s, status="DOWN") if s.server == "master03" else s for s in lb.haproxy.servers
    )
    hosts = {**observed.hosts, "lb01": replace(lb, haproxy=replace(lb.haproxy, servers=servers))}
    return replace(observed, hosts=hosts)


@dataclass
class Hosts:
    """Fake connections whose master answers check's round trip; the probe is counted."""

    cluster: Cluster
    facts: list[Observed]
    fakes: dict[str, FakeTransport] = field(default_factory=dict)
    probes: int = 0

    def __post_init__(self) -> None:
        for host in self.cluster.all_hosts():
            fake = FakeTransport(host.name)
            fake.on(
                lambda wire: "@@now" in wire,
                respond=lambda _call: Result(0, api_answer(datetime.now(UTC)), ""),
            )
            self.fakes[host.name] = fake

    def get(self, name: str) -> FakeTransport:
        return self.fakes[name]

    async def probe(self, _cluster: Cluster, _opened: object, **_kw: object) -> Observed:
        self.probes += 1
        await asyncio.sleep(0)
        return self.facts.pop(0) if len(self.facts) > 1 else self.facts[0]

    def round_trips(self) -> int:
        return sum(1 for fake in self.fakes.values() for c in fake.calls if "@@now" in c.wire)


async def test_run_check_settles_until_healthy(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = Hosts(cluster, [with_lb_down(cluster), with_lb_down(cluster), converged(cluster)])
    monkeypatch.setattr(hactl.probe, "probe", hosts.probe)
    seen: list[Report] = []
    naps: list[float] = []

    async def nap(seconds: float) -> None:
        naps.append(seconds)

    report = await run_check(
        cluster, hosts.get, dict(hosts.fakes), settle=60, on_report=seen.append, sleep=nap
    )
    assert report.healthy, report.render_text()
    assert [r.healthy for r in seen] == [False, False, True]
    assert hosts.probes == 3 and hosts.round_trips() == 3 and naps == [3.0, 3.0]


async def test_run_check_gives_the_last_report_when_the_window_is_over(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = Hosts(cluster, [with_lb_down(cluster)])
    monkeypatch.setattr(hactl.probe, "probe", hosts.probe)
    report = await run_check(cluster, hosts.get, dict(hosts.fakes), settle=0)
    assert not report.healthy
    assert [f.message for f in report.problems] == ["backends not UP: master03 DOWN"]
    assert hosts.probes == 1


async def test_run_check_reuses_facts_it_is_given(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = Hosts(cluster, [converged(cluster)])
    monkeypatch.setattr(hactl.probe, "probe", hosts.probe)
    report = await run_check(cluster, hosts.get, dict(hosts.fakes), observed=converged(cluster))
    assert report.healthy, report.render_text()
    assert hosts.probes == 0 and hosts.round_trips() == 1


# -- the engine runs it for the step and keeps its report ---------------------------------------


@dataclass(frozen=True)
class Change(Step):
    kind = "unit-change"
    seen: list[str] = field(default_factory=list, compare=False, repr=False)

    async def run(self, ctx: StepContext) -> None:
        await asyncio.sleep(0)
        self.seen.append(self.id)


def graph_with_verify(seen: list[str], verify: Verify | None = None) -> StepGraph:
    graph = StepGraph()
    a = graph.add(Change("a", "master01", "Do a", "r", address="worker[a]", seen=seen))
    b = graph.add(Change("b", "lb01", "Do b", "r", address="lb[b]", seen=seen))
    graph.add(verify or verify_step(), [a, b])
    return graph


async def test_the_engine_checks_on_the_runs_connections_and_journals_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    calls: list[dict[str, Any]] = []
    reports = [unhealthy(cluster), healthy(cluster)]

    async def check(
        _cluster: Cluster,
        transports: Callable[[str], Any],
        opened: dict[str, Any],
        *,
        settle: float,
        on_report: Callable[[Report], None],
        prefer: str | None = None,
    ) -> Report:
        calls.append({"settle": settle, "opened": opened, "transports": transports,
                      "prefer": prefer})
        for report in reports:
            on_report(report)
        return reports[-1]

    fakes = {h.name: FakeTransport(h.name) for h in cluster.all_hosts() if h.name != "worker02"}

    def get(name: str) -> FakeTransport:
        if name not in fakes:
            raise UnreachableError("connection refused", host=name)
        return fakes[name]

    seen: list[str] = []
    path = tmp_path / "run.jsonl"
    with Journal(path) as journal:
        engine = Engine(
            graph_with_verify(seen).g,
            cluster=cluster,
            transports=get,
            journal=journal,
            check=check,
            check_settle=20.0,
        )
        result = await engine.run()
    assert result.ok and sorted(seen) == ["a", "b"]
    assert result.report is reports[-1]
    (call,) = calls
    assert call["settle"] == 20.0  # the run's cap under the step's 180 s
    assert call["prefer"] == "master01"  # the master the Verify step names is asked first
    assert call["transports"] is get
    assert call["opened"]["master01"] is fakes["master01"]
    assert isinstance(call["opened"]["worker02"], UnreachableError)
    records = read_journal(path)
    (record,) = [r for r in records if r["event"] == "check"]
    assert record["step"] == "cluster.verify" and record["attempts"] == 2
    assert record["healthy"] is True and record["findings"][0]["check"] == "api"
    last_change = max(
        r["end_mono"] for r in records if r["event"] == "step_end" and r["id"] != "cluster.verify"
    )
    assert record["start_mono"] >= last_change
    assert [r["event"] for r in records][-3:] == ["check", "step_end", "run_end"]


# -- the whole apply ---------------------------------------------------------------------------


@dataclass
class World:
    cluster: Cluster
    hosts: Hosts
    echoed: list[str] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)

    def options(self, **kwargs: Any) -> run.Options:
        defaults: dict[str, Any] = {
            "cluster": self.cluster,
            "spec_file": str(SPEC),
            "echo": self.echoed.append,
            "check_settle": 0,
        }
        return run.Options(**{**defaults, **kwargs})

    def text(self) -> str:
        return "\n".join(self.echoed)


@pytest.fixture
def world(tmp_path: Path, cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> World:
    """Real run_apply, Engine, Verify step and run_check (gather + evaluate); the probe returns
    facts in order and counts; each master answers check's round trip; the lock script runs."""
    hosts = Hosts(cluster, [converged(cluster)])
    for host in cluster.all_hosts():
        hosts.fakes[host.name].on(
            lambda wire: "lock.mutex" in wire, respond=lock_runner(tmp_path / "hosts" / host.name)
        )
    w = World(cluster, hosts)

    @asynccontextmanager
    async def connections(_cluster: Cluster, _dir: str) -> AsyncIterator[Any]:
        yield hosts.get, dict(hosts.fakes)

    real = run.run_check

    async def counted(*args: Any, **kwargs: Any) -> Report:
        w.checks.append({"probes_before": hosts.probes, **kwargs})
        return await real(*args, **kwargs)

    monkeypatch.setattr(run, "connections", connections)
    monkeypatch.setattr(hactl.probe, "probe", hosts.probe)
    monkeypatch.setattr(run, "run_check", counted)
    monkeypatch.setenv("HACTL_STATE_DIR", str(tmp_path / "state"))
    return w


def a_plan(world: World, seen: list[str]) -> Callable[..., Plan]:
    def build(c: Cluster, observed: Observed, now: datetime) -> Plan:
        real = build_plan(c, observed, now=now)
        return Plan(real.cluster, real.diff, graph_with_verify(seen), real.fingerprint)

    return build


async def test_apply_checks_once_after_the_last_change_and_prints_the_report_once(
    world: World, cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    monkeypatch.setattr(run, "build_plan", a_plan(world, seen))
    result = await run.run_apply(world.options())
    assert result is not None and result.ok and result.report is not None
    assert result.report.healthy
    # one probe before the changes (under the lock), one gather by the Verify step, no other
    assert len(world.checks) == 1 and world.checks[0]["probes_before"] == 1
    assert world.hosts.probes == 2 and world.hosts.round_trips() == 1
    text = world.text()
    assert text.count("Cluster 'lab' is healthy.") == 1
    assert text.index("Apply complete:") < text.index("Cluster 'lab' is healthy.")
    assert "[ok  ] load_balancer: lb01: 3 backends UP" in text
    (journal,) = (tmp_path / "state" / "journal").rglob("*.jsonl")
    checks = [r for r in read_journal(journal) if r["event"] == "check"]
    assert len(checks) == 1 and checks[0]["healthy"] is True and checks[0]["attempts"] == 1


async def test_an_unhealthy_cluster_fails_the_apply_with_the_reports_findings(
    world: World, cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.hosts.facts = [converged(cluster), with_lb_down(cluster)]  # plan, then the check
    seen: list[str] = []
    monkeypatch.setattr(run, "build_plan", a_plan(world, seen))
    with pytest.raises(ApplyError) as caught:
        await run.run_apply(world.options())
    message = str(caught.value)
    assert "- cluster: Verify the cluster [cluster.verify] (after 1 attempt(s))" in message
    assert "lb01: backends not UP: master03 DOWN" in message
    text = world.text()
    assert text.count("Cluster 'lab' is NOT healthy (1 problem(s)):") == 1  # the report, once
    assert "[FAIL] load_balancer: lb01: backends not UP: master03 DOWN" in text
    assert "Apply failed: 1 failed, 0 skipped;" in text
    assert len(world.checks) == 1 and world.hosts.probes == 2
    (journal,) = (tmp_path / "state" / "journal").rglob("*.jsonl")
    records = read_journal(journal)
    (check,) = [r for r in records if r["event"] == "check"]
    assert check["healthy"] is False
    assert records[-1]["event"] == "run_end" and records[-1]["failed"] == ["cluster.verify"]


async def test_a_failed_change_skips_the_check(
    world: World, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    @dataclass(frozen=True)
    class Broken(Step):
        kind = "unit-broken"

        async def run(self, ctx: StepContext) -> None:
            raise HactlError("kubeadm join failed", host=self.host)

    def build(c: Cluster, observed: Observed, now: datetime) -> Plan:
        real = build_plan(c, observed, now=now)
        graph = StepGraph()
        graph.add(verify_step(), [graph.add(Broken("x", "worker01", "Join", "r"))])
        return Plan(real.cluster, real.diff, graph, real.fingerprint)

    monkeypatch.setattr(run, "build_plan", build)
    with pytest.raises(ApplyError, match="kubeadm join failed"):
        await run.run_apply(world.options())
    assert world.checks == [] and world.hosts.probes == 1
    assert "healthy" not in world.text()


async def test_nothing_to_do_checks_once_on_the_plans_facts(world: World, cluster: Cluster) -> None:
    result = await run.run_apply(world.options(confirm=lambda: None))
    assert result is None
    assert world.hosts.probes == 1  # the plan's probe; the check reuses its facts
    assert len(world.checks) == 1 and world.checks[0]["observed"] is not None
    assert world.hosts.round_trips() == 1
    text = world.text()
    assert "No changes. The cluster matches the spec." in text
    assert text.count("Cluster 'lab' is healthy.") == 1


async def test_nothing_to_do_on_an_unhealthy_cluster_still_fails(
    world: World, cluster: Cluster
) -> None:
    world.hosts.facts = [with_lb_down(cluster)]
    with pytest.raises(HactlError, match="matches the spec but `hactl check` reports problems"):
        await run.run_apply(world.options())
    assert world.hosts.probes == 1 and len(world.checks) == 1
    assert world.text().count("is NOT healthy") == 1
