"""Safety rules 1 and 2 (docs/safety.md): removals go through another started, healthy member;
a member is started only once it was added; etcd health as rule 2 defines it. Steps run against
hactl's FakeTransport; the planner runs on Synthetic observations."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from stepctx import Ctx

from hactl.errors import CommandError, PlanError
from hactl.facts.model import EtcdHealth, EtcdMember
from hactl.plan import commands as cmd
from hactl.plan import refusals, remote
from hactl.plan.etcd_ops import problems
from hactl.plan.planner import build_plan
from hactl.plan.steps import RemoveEtcdMember, StartEtcdMember, WaitEtcdHealthy
from hactl.plan.synthetic import PROBED_AT, Synthetic, member_id
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.transport.base import Result

ROOT = Path(__file__).resolve().parents[2]
URL = {n: f"https://198.18.0.2{i}:2379" for i, n in ((1, "etcd01"), (2, "etcd02"), (3, "etcd03"))}
PEER = {n: u.replace("2379", "2380") for n, u in URL.items()}




@pytest.fixture(scope="module")
def lab() -> Cluster:
    return load_file(str(ROOT / "specs" / "lab.yaml")).cluster


@pytest.fixture(autouse=True)
def _fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_sleep(_seconds: float) -> None:
        return None

    monkeypatch.setattr(remote.asyncio, "sleep", no_sleep)


def members_json(*members: tuple[int, str, str, bool]) -> str:
    return json.dumps({"header": {}, "members": [
        {"ID": i, "name": n, "peerURLs": [PEER[p]], "clientURLs": [URL[p]] if n else [],
         **({"isLearner": True} if learner else {})}
        for i, n, p, learner in members]})


THREE = ((1, "etcd01", "etcd01", False), (2, "etcd02", "etcd02", False), (3, "etcd03", "etcd03", False))


def health_json(**healthy: bool) -> str:
    return json.dumps([{"endpoint": URL[n], "health": ok} for n, ok in healthy.items()])


def any_remove(ctx: Ctx) -> bool:
    return any("remove" in a for fake in ctx.fakes.values() for a in (c.argv for c in fake.calls))


# -- rule 1: removals go through another member ------------------------------------------


async def test_remove_step_refuses_to_run_on_the_member_it_removes(lab: Cluster) -> None:
    ctx = Ctx(lab)
    fake = ctx.transport("etcd03")
    fake.on(re.compile(r"member list"), stdout=members_json(*THREE))
    fake.on(re.compile(r"endpoint health"), stdout=health_json(etcd01=True, etcd02=True, etcd03=True))
    fake.on(re.compile(r"member remove"))
    step = RemoveEtcdMember(id="s", host="etcd03", title="t", reason="r", member="etcd03", member_id="3")
    with pytest.raises(PlanError, match="through etcd03: removals go through another started member"):
        await step.run(ctx)
    assert not any_remove(ctx)


async def test_remove_step_refuses_an_unhealthy_or_unstarted_route(lab: Cluster) -> None:
    # removing a stray learner keeps quorum (2 of 3 voters healthy), but the route etcd02 is sick
    ctx = Ctx(lab)
    fake = ctx.transport("etcd02")
    fake.on(re.compile(r"member list"), stdout=members_json(*THREE, (4, "", "etcd03", True)))
    fake.on(re.compile(r"endpoint health"), stdout=health_json(etcd01=True, etcd02=False, etcd03=True),
            exit_status=1)
    step = RemoveEtcdMember(id="s", host="etcd02", title="t", reason="r", member="4", member_id="4")
    with pytest.raises(PlanError, match="etcd02 failed its endpoint health check"):
        await step.run(ctx)
    assert not any_remove(ctx)
    # etcd02 is still a learner: not a started voter, not a route
    ctx = Ctx(lab)
    fake = ctx.transport("etcd02")
    fake.on(re.compile(r"member list"), stdout=members_json(
        THREE[0], (2, "etcd02", "etcd02", True), THREE[2], (4, "", "etcd03", True)))
    fake.on(re.compile(r"endpoint health"), stdout=health_json(etcd01=True, etcd02=True, etcd03=True))
    step = RemoveEtcdMember(id="s", host="etcd02", title="t", reason="r", member="x", member_id="4")
    with pytest.raises(PlanError, match="removals go through another started member"):
        await step.run(ctx)
    assert not any_remove(ctx)


async def test_remove_step_runs_through_a_healthy_other_member(lab: Cluster) -> None:
    ctx = Ctx(lab)
    fake = ctx.transport("etcd01")
    fake.on(re.compile(r"member list"), stdout=members_json(*THREE))
    fake.on(re.compile(r"endpoint health"), stdout=health_json(etcd01=True, etcd02=True, etcd03=False),
            exit_status=1)
    fake.on(re.compile(r"member remove"))
    await RemoveEtcdMember(id="s", host="etcd01", title="t", reason="r", member="etcd03",
                           member_id="3").run(ctx)
    remove = next(a for a in ctx.argvs("etcd01") if "remove" in a)
    assert remove[-1] == "3" and f"--endpoints={URL['etcd01']}" in remove
    assert list(ctx.fakes) == ["etcd01"]  # nothing ran on the member being removed


def _failed_member(lab: Cluster, name: str) -> Synthetic:
    s = Synthetic(lab).converged()
    return s.etcd_facts(name, active=False, data_dir_state="empty", members=None, status=None,
                        health=None, ca_fingerprint=None)


@pytest.mark.parametrize(("failed", "route"), [("etcd03", "etcd01"), ("etcd01", "etcd02")])
def test_replacement_removes_through_another_healthy_member(lab: Cluster, failed: str, route: str) -> None:
    plan = build_plan(lab, _failed_member(lab, failed).observed(), now=PROBED_AT)
    steps = {s.id: s for s in plan.steps()}
    remove = steps[f"etcd.member[{failed}].remove"]
    assert remove.host == route and remove.host != failed
    assert remove.member == failed  # type: ignore[attr-defined]
    assert steps[f"etcd.member[{failed}].start"].host == failed


def test_replacement_skips_an_unhealthy_member_as_the_route(lab: Cluster) -> None:
    s = _failed_member(lab, "etcd03")
    s.etcd_facts("etcd01", health=EtcdHealth(URL["etcd01"], False, "timeout"))
    # the route is the first spec member that is a started voter and answered its health check
    observed = s.observed()
    assert refusals.removal_route(lab, observed, "etcd03", "x") == "etcd02"
    assert refusals.removal_route(lab, observed, "etcd02", "x") is None  # etcd03 is down, etcd01 sick


def test_removal_without_another_started_healthy_member_is_refused_at_plan_time(lab: Cluster) -> None:
    s = _failed_member(lab, "etcd03")
    for name in ("etcd01", "etcd02"):
        s.etcd_facts(name, health=EtcdHealth(URL[name], False, "timeout"))
    with pytest.raises(PlanError) as info:
        build_plan(lab, s.observed(), now=PROBED_AT)
    assert ("refusing to remove etcd member etcd03: no other started, healthy member to run "
            "`etcdctl member remove` through") in str(info.value)


def test_removal_route_must_be_a_started_voter() -> None:
    five = load_file(str(ROOT / "specs" / "five-etcd.yaml")).cluster
    names = [h.name for h in five.etcd_members]
    s = Synthetic(five).converged()
    listed = s.hosts[names[0]].etcd.members  # type: ignore[union-attr]
    assert listed is not None
    # etcd01 answers its health check but is only a learner in the agreed list: never the route
    learner = tuple(replace(m, is_learner=True) if m.name == names[0] else m for m in listed)
    for name in names:
        s.etcd_facts(name, members=learner)
    observed = s.observed()
    assert refusals.removal_route(five, observed, names[4]) == names[1]
    # nor is the member being removed, whatever its name: matched by its id as well
    assert refusals.removal_route(five, observed, "old", member_id(names[1])) == names[2]


# -- rule 1: a member is started only after it was added ---------------------------------


async def test_start_refuses_a_member_that_was_never_added(lab: Cluster) -> None:
    ctx = Ctx(lab)
    ctx.transport("etcd01").on(re.compile(r"member list"), stdout=members_json(*THREE[:2]))
    step = StartEtcdMember(id="s", host="etcd03", title="t", reason="r", via="etcd01")
    with pytest.raises(CommandError, match="etcd03 is not in the member list; add it first"):
        await step.run(ctx)
    assert ctx.argvs("etcd03") == []  # nothing written, nothing started
    assert ctx.transport("etcd03").files == {}


async def test_start_accepts_an_added_unstarted_member(lab: Cluster) -> None:
    ctx = Ctx(lab)
    state = {"lists": 0}
    listing = [members_json(*THREE[:2], (3, "", "etcd03", True)), members_json(*THREE[:2], (3, "etcd03", "etcd03", True))]

    def answer(_call: object) -> object:
        from hactl.transport.base import Result

        state["lists"] += 1
        return Result(0, listing[min(state["lists"], 2) - 1], "")

    ctx.transport("etcd01").on(re.compile(r"member list"), respond=answer)  # type: ignore[arg-type]
    m3 = ctx.transport("etcd03")
    m3.on(("sh",))  # no member data in the data dir; preparing it prints nothing
    m3.on(("systemctl",))
    await StartEtcdMember(id="s", host="etcd03", title="t", reason="r", via="etcd01").run(ctx)
    assert 'ETCD_INITIAL_CLUSTER_STATE="existing"' in m3.files[cmd.ETCD_ENV][0].decode()
    # restart, not start: a replaced member's old process must not keep running
    assert ("systemctl", "restart", "--no-block", "etcd") in ctx.argvs("etcd03")


# -- rule 2: etcd health (apply side) ------------------------------------------------------


def member(i: int, name: str, peer: str, learner: bool = False) -> EtcdMember:
    return EtcdMember(format(i, "x"), name, (PEER[peer],), (), learner)


GOOD = [member(1, "etcd01", "etcd01"), member(2, "etcd02", "etcd02"), member(3, "etcd03", "etcd03")]
ALL_HEALTHY = {URL[n]: True for n in URL}


@pytest.mark.parametrize(("members", "health", "expected"), [
    pytest.param(GOOD[:2], ALL_HEALTHY, "members not started: etcd03", id="expected-member-missing"),
    pytest.param([*GOOD, member(4, "etcd04", "etcd03")], ALL_HEALTHY, "unexpected or unstarted members: etcd04",
                 id="unexpected-member"),
    pytest.param([*GOOD, member(10, "", "etcd03")], ALL_HEALTHY, "unexpected or unstarted members: a",
                 id="unstarted-extra-member"),
    pytest.param([*GOOD[:2], member(3, "", "etcd03")], ALL_HEALTHY, "members not started: etcd03",
                 id="expected-member-unstarted"),
    pytest.param([*GOOD[:2], member(3, "etcd03", "etcd03", learner=True)], ALL_HEALTHY,
                 "learners not promoted: etcd03", id="learner-left"),
    pytest.param(GOOD, {**ALL_HEALTHY, URL["etcd02"]: False}, "endpoint health false on etcd02",
                 id="one-endpoint-unhealthy"),
    pytest.param(GOOD, {URL["etcd01"]: True, URL["etcd02"]: True}, "endpoint health false on etcd03",
                 id="one-endpoint-unanswered"),
])
def test_health_problems_each_reported(lab: Cluster, members: list[EtcdMember], health: dict[str, bool],
                                       expected: str) -> None:
    assert problems(members, health, list(lab.etcd_members), Ctx(lab)) == expected


def test_health_problems_none_when_all_good(lab: Cluster) -> None:
    assert problems(GOOD, ALL_HEALTHY, list(lab.etcd_members), Ctx(lab)) is None


async def test_wait_etcd_healthy_gives_up_with_the_reason_and_checks_each_endpoint(lab: Cluster) -> None:
    ctx = Ctx(lab)
    fake = ctx.transport("etcd01")
    fake.on(re.compile(r"member list"), stdout=members_json(*THREE[:2], (3, "etcd03", "etcd03", True)))
    fake.on(re.compile(r"endpoint health"), stdout=health_json(etcd01=True, etcd02=True, etcd03=True))
    step = WaitEtcdHealthy(id="s", host="etcd01", title="t", reason="r", timeout=5.0)
    with pytest.raises(CommandError, match="learners not promoted: etcd03") as info:
        await step.run(ctx)
    assert info.value.transient
    health = next(a for a in ctx.argvs("etcd01") if "health" in a)
    assert "--cluster" not in health
    assert f"--endpoints={','.join(URL.values())}" in health


async def test_wait_etcd_healthy_returns_once_rule_2_holds(lab: Cluster) -> None:
    ctx = Ctx(lab)
    fake = ctx.transport("etcd01")
    fake.on(re.compile(r"member list"), stdout=members_json(*THREE))
    fake.on(re.compile(r"endpoint health"), stdout=health_json(etcd01=True, etcd02=True, etcd03=True))
    for name in ("etcd01", "etcd02", "etcd03"):
        ctx.transport(name).on(("rm",))
    await WaitEtcdHealthy(id="s", host="etcd01", title="t", reason="r", timeout=5.0).run(ctx)
    assert ("etcd healthy", {"members": 3}) in ctx.events
    # the cluster has formed: the bootstrap-pending marker goes from every member
    for name in ("etcd01", "etcd02", "etcd03"):
        assert ("rm", "-f", "/etc/etcd/hactl-bootstrap-pending") in [c.argv for c in ctx.transport(name).calls]


@pytest.mark.parametrize("still_unstarted", [True, False])
async def test_start_moves_an_earlier_identitys_member_data_aside_only_when_still_unstarted(
    lab: Cluster, still_unstarted: bool
) -> None:
    # A replacement killed between its remove and its start leaves the old member's data on the
    # host and a learner that never ran: etcd refuses to start on the removed identity's data
    # ("the member has been permanently removed"), so the start moves it aside (never deletes).
    ctx = Ctx(lab)
    name = "" if still_unstarted else "etcd03"
    listing = [members_json(*THREE[:2], (3, name, "etcd03", True)),
               members_json(*THREE[:2], (3, "etcd03", "etcd03", True))]
    lists = {"n": 0}

    def answer(_call: object) -> Result:
        lists["n"] += 1  # the first answer is the step's check; then the member runs
        return Result(0, listing[min(lists["n"], 2) - 1], "")

    ctx.transport("etcd01").on(re.compile(r"member list"), respond=answer)  # type: ignore[arg-type]
    m3 = ctx.transport("etcd03")
    m3.on(("sh",), stdout=f"{lab.etcd.data_dir}/member\n")  # member data in the data dir
    m3.on(("systemctl",))
    step = StartEtcdMember(id="s", host="etcd03", title="t", reason="r", via="etcd01", stale_data=True)
    assert "member data (an earlier identity's) aside" in " ".join(step.commands())
    await step.run(ctx)
    argvs = ctx.argvs("etcd03")
    moved = [a for a in argvs if a[:2] == ("sh", "-c") and "aside" in a[2]]
    if still_unstarted:
        assert ("systemctl", "stop", "etcd") in argvs
        assert argvs.index(("systemctl", "stop", "etcd")) < argvs.index(moved[0])
    else:  # it ran meanwhile: its data is its own
        assert ("systemctl", "stop", "etcd") not in argvs and not moved


def test_a_never_started_member_with_member_data_is_planned_as_a_start_that_moves_it(
    lab: Cluster,
) -> None:
    s = Synthetic(lab).converged()
    listed = tuple(replace(m, name="", client_urls=(), is_learner=True)
                   if m.name == "etcd03" else m for m in s.hosts["etcd01"].etcd.members)  # type: ignore[union-attr]
    for n in ("etcd01", "etcd02"):
        s.etcd_facts(n, members=listed)
    s.etcd_facts("etcd03", active=False, data_dir_state="member", members=None, status=None,
                 health=None)
    plan = build_plan(lab, s.observed(), now=PROBED_AT)
    steps = {st.id: st for st in plan.steps()}
    start = steps["etcd.member[etcd03].start"]
    assert isinstance(start, StartEtcdMember) and start.stale_data
    assert "etcd.member[etcd03].promote" in steps and "etcd.member[etcd03].remove" not in steps
    change = next(c for c in plan.diff.changes if c.address == "etcd.member[etcd03]")
    assert "holds member data of an earlier identity" in change.reason
    assert "moved aside" in change.reason and "nothing is deleted" in change.reason
