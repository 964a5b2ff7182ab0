"""The run around the engine: stale saved plans, applied counts, plan ids, approval, progress."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import networkx as nx
import pytest
from click.testing import CliRunner

from hactl.apply import Engine, StepResult
from hactl.apply.run import applied_counts, plan_id, stale_report, transport_getter
from hactl.cli import main
from hactl.cli.apply import PlainReporter, _confirm
from hactl.errors import UnreachableError
from hactl.plan.planner import build_plan
from hactl.plan.step import Step
from hactl.plan.synthetic import Synthetic
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.transport.fake import FakeTransport

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "specs" / "lab.yaml"
NOW = datetime(2026, 11, 26, 23, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return load_file(SPEC).cluster


def test_a_plan_is_not_stale_while_the_hosts_are_unchanged(cluster: Cluster) -> None:
    saved = build_plan(cluster, Synthetic(cluster).etcd().observed(), now=NOW)
    again = build_plan(cluster, Synthetic(cluster).etcd().observed(), now=NOW)
    assert stale_report(saved, again) is None
    assert plan_id(saved) == plan_id(again) and len(plan_id(saved)) == 12


def test_a_stale_plan_says_what_changed_per_host(cluster: Cluster) -> None:
    saved = build_plan(cluster, Synthetic(cluster).etcd().lb().observed(), now=NOW)
    drifted = Synthetic(cluster).etcd().lb(config="global\n  # edited by hand\n")
    fresh = build_plan(cluster, drifted.observed(), now=NOW)
    report = stale_report(saved, fresh)
    assert report is not None
    assert report.startswith("  lb01: now needs ~ lb[lb01].haproxy_cfg")
    assert plan_id(saved) != plan_id(fresh)
    # a host that changed without changing the actions is still named
    moved = Synthetic(cluster).etcd().lb().etcd_facts("etcd02", env_sha256="other")
    fresh2 = build_plan(cluster, moved.observed(), now=NOW)
    report2 = stale_report(saved, fresh2)
    assert report2 is not None and "etcd02" in report2


async def test_applied_counts_follow_the_plan_changes(cluster: Cluster) -> None:
    plan = build_plan(cluster, Synthetic(cluster).observed(), now=NOW)
    add, change, remove = plan.counts()
    assert add > 0

    async def ok(_self: Step, _ctx: object) -> None:
        await asyncio.sleep(0)

    graph: nx.DiGraph = nx.DiGraph()
    for step in plan.steps():
        graph.add_node(
            step.id,
            step=Step(step.id, step.host, step.title, step.reason, step.action, step.address),
        )
    graph.add_edges_from(plan.graph.g.edges)
    original = Step.run
    Step.run = ok  # type: ignore[method-assign]
    try:
        result = await Engine(graph, cluster=cluster, transports=lambda h: FakeTransport(h)).run()
    finally:
        Step.run = original  # type: ignore[method-assign]
    assert result.ok
    assert applied_counts(plan, result) == (add, change, remove)
    # a failed step leaves its change uncounted
    first = next(iter(result.results.values()))
    result.results[first.step.id] = StepResult(first.step, "failed")
    assert applied_counts(plan, result)[0] < add


def test_transport_getter_raises_the_connection_error() -> None:
    fake = FakeTransport("etcd01")
    err = UnreachableError("connection refused", host="etcd02")
    get = transport_getter({"etcd01": fake, "etcd02": err, "etcd03": OSError("boom")})
    assert get("etcd01") is fake
    with pytest.raises(UnreachableError, match="connection refused"):
        get("etcd02")
    with pytest.raises(UnreachableError, match="boom"):
        get("etcd03")
    with pytest.raises(UnreachableError, match="no connection"):
        get("nope")


def test_apply_without_a_terminal_needs_auto_approve(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused before any connection is opened (CliRunner's stdin is not a TTY)."""
    import hactl.apply.run as run

    def no_connections(*_a: object, **_k: object) -> None:
        raise AssertionError("must not connect")

    monkeypatch.setattr(run, "connections", no_connections)
    res = CliRunner().invoke(main, ["apply", "-f", str(SPEC)])
    assert res.exit_code == 1
    assert "stdin is not a terminal" in res.output
    assert "--auto-approve" in res.output
    _confirm(True, False)  # --auto-approve
    _confirm(False, True)  # a saved plan is applied without asking


def test_apply_usage_needs_exactly_one_of_spec_and_plan() -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["apply"])
    assert res.exit_code == 2 and "either -f SPEC or a saved PLAN_FILE" in res.output
    res = runner.invoke(main, ["apply", "plans/x.json", "-f", str(SPEC)])
    assert res.exit_code == 2


def test_plain_progress_lines() -> None:
    lines: list[str] = []
    rep = PlainReporter(lines.append)
    step = Step("etcd.member[etcd01]", "etcd01", "Bootstrap etcd member etcd01", "new")
    rep.started(step, 1)
    rep.still_running(step, 10.2)
    rep.retrying(step, 1, 2.0, "connection reset\nmore")
    rep.finished(StepResult(step, "ok", 1, 1.0, 4.5))
    rep.finished(StepResult(step, "failed", 1, 1.0, 2.0, error="exit 1\nstderr"))
    rep.finished(StepResult(step, "skipped", skipped_because="pki.etcd-ca"))
    assert lines == [
        "etcd01: Bootstrap etcd member etcd01: started",
        "etcd01: Bootstrap etcd member etcd01: still running (10s)",
        "etcd01: Bootstrap etcd member etcd01: attempt 1 failed (connection reset); retrying in 2.0s",
        "etcd01: Bootstrap etcd member etcd01: done in 3.5s",
        "etcd01: Bootstrap etcd member etcd01: FAILED after 1.0s: exit 1",
        "etcd01: Bootstrap etcd member etcd01: skipped (a step before it failed: pki.etcd-ca)",
    ]


def test_on_a_terminal_only_yes_approves(monkeypatch: pytest.MonkeyPatch) -> None:
    import click

    from hactl.errors import HactlError

    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    answers = iter(["yes", "y", ""])
    asked: list[str] = []

    def prompt(text: str, **_kw: object) -> str:
        asked.append(text)
        return next(answers)

    monkeypatch.setattr(click, "prompt", prompt)
    _confirm(False, False)
    assert "Only 'yes' will be accepted" in asked[0]
    for _ in range(2):
        with pytest.raises(HactlError, match="Apply cancelled"):
            _confirm(False, False)


async def test_the_prompt_runs_off_the_event_loop() -> None:
    import threading

    from hactl.apply.run import in_daemon_thread
    from hactl.errors import HactlError

    seen: list[str] = []
    gate = threading.Event()

    def blocking() -> None:
        seen.append(threading.current_thread().name)
        gate.wait(5)

    task = asyncio.create_task(in_daemon_thread(blocking))
    for _ in range(100):  # the loop keeps running while the thread blocks
        await asyncio.sleep(0.01)
        if seen:
            break
    assert seen == ["hactl-approve"] and not task.done()
    gate.set()
    await task

    def refuse() -> None:
        raise HactlError("Apply cancelled.")

    with pytest.raises(HactlError, match="cancelled"):
        await in_daemon_thread(refuse)


def test_live_view_shows_running_steps_and_prints_finished_ones() -> None:
    import io

    from rich.console import Console

    from hactl.cli.apply import LiveReporter

    rep = LiveReporter()
    buf = io.StringIO()
    rep.console = rep.live.console = Console(file=buf, force_terminal=True, width=120)
    step = Step("lb[lb01].haproxy", "lb01", "Configure HAProxy on [lb01]", "drift")
    with rep:
        rep.started(step, 1)
        frame = rep._render()
        rep.finished(StepResult(step, "ok", 1, 1.0, 1.5))
    out = buf.getvalue()
    assert "lb01: Configure HAProxy on [lb01]: done in 0.5s" in out
    assert "[cyan]" not in out and rep.running == {}
    assert frame.row_count == 1


def test_a_host_that_does_not_answer_makes_a_saved_plan_stale_and_says_so(
    cluster: Cluster,
) -> None:
    saved = build_plan(cluster, Synthetic(cluster).converged().observed(), now=NOW)
    now = Synthetic(cluster).converged().unreachable("worker02", "probe timed out after 60s")
    observed = now.observed()
    fresh = build_plan(cluster, observed, now=NOW)
    report = stale_report(saved, fresh, observed)
    assert report == "  worker02: could not be read now (probe timed out after 60s)"
