"""The whole `hactl apply` run with fake hosts: the real lock script runs under /bin/sh in a folder
per host, the probe returns synthetic observations, and check is stubbed. Proves the order
lock → probe → plan → approve → execute → release, and the refusals."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import hactl.apply.run as run
import hactl.probe
from hactl.check import Finding, Report
from hactl.diff import Change, Diff, Op
from hactl.errors import ApplyError, HactlError, LockError, StalePlanError
from hactl.facts.model import Observed
from hactl.journal import read_journal
from hactl.lock import ClusterLock, LockOwner
from hactl.plan import planfile
from hactl.plan.graph import StepGraph
from hactl.plan.planner import Plan, build_plan
from hactl.plan.step import Step, StepContext
from hactl.plan.synthetic import Synthetic
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.transport.base import Result
from hactl.transport.fake import Call, FakeTransport
from hactl.vocabulary import Address, Component

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "specs" / "lab.yaml"
NOW = datetime(2026, 11, 26, 23, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return load_file(SPEC).cluster


@dataclass
class World:
    base: Path
    cluster: Cluster
    observed: Observed
    fakes: dict[str, FakeTransport] = field(default_factory=dict)
    probes: int = 0
    confirms: int = 0
    echoed: list[str] = field(default_factory=list)

    def transport(self, host: str) -> FakeTransport:
        return self.fakes[host]

    def locked(self) -> list[str]:
        return sorted(p.parent.name for p in self.base.glob("*/lock.d"))

    def options(self, **kwargs: Any) -> run.Options:
        def confirm() -> None:
            self.confirms += 1

        defaults: dict[str, Any] = {
            "cluster": self.cluster,
            "spec_file": str(SPEC),
            "confirm": confirm,
            "echo": self.echoed.append,
            "check_settle": 0,
        }
        return run.Options(**{**defaults, **kwargs})


def lock_runner(folder: Path) -> Callable[[Call], Result]:
    """Answers hactl's lock script by running it with /bin/sh in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)

    def respond(call: Call) -> Result:
        script = call.wire.replace("root=/var/lib/hactl;", f"root={folder};")
        done = subprocess.run(
            ["/bin/sh", "-c", script],
            input=call.stdin or b"",
            capture_output=True,
            timeout=30,
            check=False,
        )
        return Result(done.returncode, done.stdout.decode(), done.stderr.decode())

    return respond


@pytest.fixture
def world(tmp_path: Path, cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> World:
    w = World(tmp_path / "hosts", cluster, Synthetic(cluster).observed())
    for host in cluster.all_hosts():
        fake = FakeTransport(host.name)
        fake.on(lambda wire: "lock.mutex" in wire, respond=lock_runner(w.base / host.name))
        w.fakes[host.name] = fake

    @asynccontextmanager
    async def connections(_cluster: Cluster, _dir: str) -> AsyncIterator[Any]:
        yield w.transport, dict(w.fakes)

    async def probe(_cluster: Cluster, _opened: object, **_kw: object) -> Observed:
        w.probes += 1
        await asyncio.sleep(0)
        return w.observed

    async def check(*_a: object, **_k: object) -> Report:
        return Report(cluster.metadata.name, (Finding("api", "ok", "k8s-api.lab:6443", "ok"),))

    monkeypatch.setattr(run, "connections", connections)
    monkeypatch.setattr(hactl.probe, "probe", probe)
    monkeypatch.setattr(run, "run_check", check)
    monkeypatch.setenv("HACTL_STATE_DIR", str(tmp_path / "state"))
    return w


@dataclass(frozen=True)
class Fake(Step):
    kind = "unit-fake"
    fail: bool = False
    seen: list[str] = field(default_factory=list, compare=False, repr=False)

    async def run(self, ctx: StepContext) -> None:
        await asyncio.sleep(0)
        self.seen.append(self.id)
        if self.fail:
            raise HactlError("kubeadm join failed", host=self.host)


def fake_plan(cluster: Cluster, seen: list[str], fail: str | None = None) -> Plan:
    graph = StepGraph()
    a = graph.add(Fake("a", "etcd01", "Do a", "r", address="worker[a]", seen=seen))
    b = graph.add(
        Fake("b", "master02", "Do b", "r", address="worker[b]", fail=fail == "b", seen=seen), [a]
    )
    graph.add(Fake("c", "worker01", "Do c", "r", address="worker[c]", seen=seen), [a])
    graph.add(Fake("d", None, "Verify", "r", action="read", seen=seen), [b])
    changes = tuple(Change(Op.CREATE, Address(Component.WORKER, n), None, {}, "new", "h") for n in "abc")
    return Plan(cluster, Diff(changes), graph, {})


async def test_apply_runs_the_plan_under_the_lock_and_releases_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--auto-approve: lock, one probe, plan, run, release."""
    seen: list[str] = []
    locked_during: list[list[str]] = []

    def plan(cluster: Cluster, _obs: Observed, *, now: datetime) -> Plan:
        locked_during.append(world.locked())
        return fake_plan(cluster, seen)

    monkeypatch.setattr(run, "build_plan", plan)
    result = await run.run_apply(world.options(confirm=None))
    assert result is not None and result.ok
    assert locked_during == [["etcd01", "etcd02"]]  # the plan was made under the lock
    assert world.locked() == []  # and it was released
    assert world.confirms == 0 and world.probes == 1
    assert seen[0] == "a" and set(seen) == {"a", "b", "c", "d"}
    assert "Apply complete: 3 added, 0 changed, 0 removed in " in "\n".join(world.echoed)
    journal = next(Path(world.base.parent / "state" / "journal" / "lab").glob("*.jsonl"))
    assert [r["event"] for r in read_journal(journal)].count("step_end") == 4


async def test_the_approval_prompt_holds_no_lock_and_the_plan_is_rechecked_under_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """L8: while a person reads the plan nothing is locked; after "yes" the lock is taken, the
    hosts probed again, and the approved plan runs."""
    seen: list[str] = []
    locked_during: list[list[str]] = []
    locked_at_prompt: list[list[str]] = []

    def plan(cluster: Cluster, _obs: Observed, *, now: datetime) -> Plan:
        locked_during.append(world.locked())
        return fake_plan(cluster, seen)

    def confirm() -> None:
        locked_at_prompt.append(world.locked())

    monkeypatch.setattr(run, "build_plan", plan)
    result = await run.run_apply(world.options(confirm=confirm))
    assert result is not None and result.ok
    assert locked_at_prompt == [[]]
    assert locked_during == [[], ["etcd01", "etcd02"]]  # shown unlocked, re-checked locked
    assert world.probes == 2 and set(seen) == {"a", "b", "c", "d"}
    assert world.locked() == []


async def test_hosts_that_change_while_the_prompt_waits_refuse_the_approved_plan(
    world: World, cluster: Cluster
) -> None:
    """L8: what was approved is what runs, or nothing: a change during the prompt is named."""
    world.observed = Synthetic(cluster).converged().lb(config="global\n  # edited\n").observed()

    def confirm() -> None:  # someone fixes lb01 by hand while the question is open
        world.observed = Synthetic(cluster).converged().observed()

    with pytest.raises(StalePlanError) as caught:
        await run.run_apply(world.options(confirm=confirm))
    text = str(caught.value)
    assert text.startswith("The hosts changed while the plan waited for approval; nothing was")
    assert "lb01: no longer needs ~ lb[lb01].haproxy_cfg" in text
    assert world.probes == 2 and world.locked() == []
    assert not (world.base.parent / "state" / "journal").exists()  # no step ran


async def test_a_failed_step_raises_one_report_and_the_lock_is_released(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    monkeypatch.setattr(run, "build_plan", lambda c, _o, now: fake_plan(c, seen, fail="b"))
    with pytest.raises(ApplyError) as caught:
        await run.run_apply(world.options())
    text = str(caught.value)
    assert "- master02: Do b [b]" in text and "kubeadm join failed" in text
    assert "- cluster: Verify [d]" in text  # skipped
    assert "c" in seen and "d" not in seen
    assert "Apply failed: 1 failed, 1 skipped; 2 added" in "\n".join(world.echoed)
    assert world.locked() == []


async def test_a_cancelled_approval_changes_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    monkeypatch.setattr(run, "build_plan", lambda c, _o, now: fake_plan(c, seen))

    def refuse() -> None:
        raise HactlError("Apply cancelled.")

    with pytest.raises(HactlError, match="Apply cancelled"):
        await run.run_apply(world.options(confirm=refuse))
    assert seen == [] and world.locked() == []


async def test_nothing_to_do_prints_no_changes_and_runs_check(
    world: World, cluster: Cluster
) -> None:
    world.observed = Synthetic(cluster).converged().observed()
    result = await run.run_apply(world.options())
    assert result is None and world.confirms == 0
    text = "\n".join(world.echoed)
    assert "No changes. The cluster matches the spec." in text
    assert "Cluster 'lab' is healthy." in text
    assert world.locked() == []


async def test_a_second_apply_fails_fast_before_probing(world: World, cluster: Cluster) -> None:
    holder = LockOwner.new(command="hactl apply -f other.yaml")
    other = ClusterLock(cluster, world.transport, holder)
    # another apply holds the lock
    await other.acquire()
    with pytest.raises(LockError, match=r"is locked by .*hactl apply -f other.yaml"):
        await run.run_apply(world.options())
    assert world.probes == 0 and world.confirms == 0
    assert world.locked() == ["etcd01", "etcd02"]  # the holder's lock is untouched
    await other.release()


async def test_a_stale_saved_plan_is_refused_and_a_fresh_one_applies(
    world: World, cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = build_plan(cluster, Synthetic(cluster).converged().observed(), now=NOW)
    drifted = Synthetic(cluster).converged().lb(config="global\n  # edited by hand\n")
    path = tmp_path / "plan.json"
    planfile.save(build_plan(cluster, drifted.observed(), now=NOW), str(path))
    world.observed = Synthetic(cluster).converged().observed()  # someone fixed it meanwhile
    with pytest.raises(StalePlanError) as caught:
        await run.run_apply(world.options(cluster=None, spec_file=None, plan_file=str(path)))
    assert str(caught.value).startswith("Saved plan is stale: the hosts changed since it was made.")
    assert "lb01: no longer needs ~ lb[lb01].haproxy_cfg" in str(caught.value)
    assert world.locked() == [] and world.confirms == 0
    assert len(saved.graph) == 0

    # unchanged hosts: the saved plan's own steps run, without a question
    world.observed = drifted.observed()
    seen: list[str] = []

    def executes(p: Plan) -> Plan:
        return fake_plan(p.cluster, seen)

    original, planner = planfile.load, run.build_plan
    monkeypatch.setattr(planfile, "load", lambda f: _keep_fingerprint(original(f), executes))
    monkeypatch.setattr(  # a fresh plan for these facts gives the same steps
        run, "build_plan", lambda c, o, now: _keep_fingerprint(planner(c, o, now=now), executes)
    )
    result = await run.run_apply(world.options(cluster=None, spec_file=None, plan_file=str(path)))
    assert result is not None and result.ok and world.confirms == 0
    assert set(seen) == {"a", "b", "c", "d"}


def _keep_fingerprint(saved: Plan, swap: Callable[[Plan], Plan]) -> Plan:
    fake = swap(saved)
    return Plan(saved.cluster, fake.diff, fake.graph, saved.fingerprint)


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda s: s.update(timeout=5.0), "timeout is 5.0 in the plan, 60.0 in a fresh plan"),
        (lambda s: s.update(id="lb[lb01].other"), "step lb[lb01].other: in the plan, not in a"),
    ],
    ids=["edited-field", "renamed-step"],
)
async def test_a_saved_plan_whose_steps_were_edited_is_refused(
    world: World,
    cluster: Cluster,
    tmp_path: Path,
    edit: Callable[[dict[str, Any]], None],
    says: str,
) -> None:
    """L9: well-typed but edited steps do not run: they must be the steps hactl plans now."""
    drifted = Synthetic(cluster).converged().lb(config="global\n  # edited by hand\n")
    world.observed = drifted.observed()
    doc = planfile.to_document(build_plan(cluster, drifted.observed(), now=NOW))
    (haproxy,) = [s for s in doc["saved"]["steps"] if s["kind"] == "configure_haproxy"]
    assert haproxy["timeout"] == 60.0
    edit(haproxy)
    doc["saved"]["edges"] = [e for e in doc["saved"]["edges"] if "lb[lb01].haproxy" not in e]
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(StalePlanError) as caught:
        await run.run_apply(world.options(cluster=None, spec_file=None, plan_file=str(path)))
    text = str(caught.value)
    assert text.startswith(f"Saved plan {path} does not hold the steps hactl plans for these")
    assert says in text and "edge lb[lb01].haproxy -> cluster.verify: only in a fresh plan" in text
    assert world.locked() == [] and not (tmp_path / "state" / "journal").exists()
