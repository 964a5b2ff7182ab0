"""Restarts of running etcd members (H1), stale processes (M3), learners (M7), the API servers'
etcd endpoints (M8), adopted members in ETCD_INITIAL_CLUSTER (L5) and what a new member's start
does to its data dir (C1). The planner runs on Synthetic observations; steps on FakeTransport;
the data-dir command and the running-environment fact on the real shell."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from stepctx import Ctx

from hactl.errors import CommandError, PlanError
from hactl.facts import etcd as etcd_facts
from hactl.facts.etcd import parse_member_list
from hactl.facts.model import EtcdHealth
from hactl.plan import commands as cmd
from hactl.plan import refusals, remote
from hactl.plan.etcd_ops import initial_cluster
from hactl.plan.planner import Plan, build_plan
from hactl.plan.steps import ReconfigureEtcdMember, UpdateEtcdMember
from hactl.plan.synthetic import PROBED_AT, Synthetic
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.transport.base import Result

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("etcd01", "etcd02", "etcd03")
URL = {n: f"https://198.18.0.2{i}:2379" for i, n in enumerate(NAMES, 1)}


@pytest.fixture(scope="module")
def lab() -> Cluster:
    return load_file(str(ROOT / "specs" / "lab.yaml")).cluster


@pytest.fixture(autouse=True)
def _fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_sleep(_seconds: float) -> None:
        return None

    monkeypatch.setattr(remote.asyncio, "sleep", no_sleep)


def edited(cluster: Cluster, **etcd: Any) -> Cluster:
    data = cluster.model_dump(by_alias=True, mode="json")
    data["etcd"].update(etcd)
    return Cluster.model_validate(data)


def plan_of(cluster: Cluster, s: Synthetic) -> Plan:
    return build_plan(cluster, s.observed(), now=PROBED_AT)


def etcd_ids(plan: Plan) -> list[str]:
    return [s.id for s in plan.steps() if s.id.startswith("etcd")]


def running(lab: Cluster, *, init: bool = False) -> Synthetic:
    """The lab's etcd running healthy (and the rest of the cluster when ``init``)."""
    s = Synthetic(lab)
    return s.converged() if init else s.etcd().lb()


def sick(s: Synthetic, name: str, error: str = "context deadline exceeded") -> Synthetic:
    facts = s.hosts[name].etcd
    assert facts is not None and facts.health is not None
    return s.etcd_facts(name, health=EtcdHealth(facts.health.endpoint, False, error))


# -- H1: a peer URL change is `member update` then a restart, one member at a time ----------


def test_peer_port_change_is_member_update_then_restart_one_member_at_a_time(lab: Cluster) -> None:
    moved = edited(lab, peerPort=2390)
    plan = plan_of(moved, running(lab))
    chain = []
    for name in NAMES:
        chain += [f"etcd.member[{name}].update-peer", f"etcd.member[{name}].reconfigure"]
    assert etcd_ids(plan) == [*chain, "etcd.health"]
    assert set(itertools.pairwise(chain)) <= set(plan.graph.edges())
    steps = {s.id: s for s in plan.steps()}
    update = steps["etcd.member[etcd01].update-peer"]
    assert isinstance(update, UpdateEtcdMember) and update.host == "etcd02" and update.member == "etcd01"
    restart = steps["etcd.member[etcd01].reconfigure"]
    assert isinstance(restart, ReconfigureEtcdMember) and restart.restart and restart.rewrite
    assert "wait until the whole cluster is healthy (rule 2)" in restart.commands()
    assert ("the member list has its peer URL as https://198.18.0.21:2380, the spec says "
            "https://198.18.0.21:2390: `etcdctl member update` through another member") in restart.reason


def test_restarts_come_after_membership_changes(lab: Cluster) -> None:
    # etcd03 missing from the member list and a client-port drift on the others: add it first,
    # restart the running members last (each on the membership the others left)
    s = Synthetic(lab).etcd(["etcd01", "etcd02"]).lb()
    plan = plan_of(edited(lab, clientPort=2479), s)
    assert etcd_ids(plan) == [
        "etcd.member[etcd03].add", "etcd.member[etcd03].start", "etcd.member[etcd03].promote",
        "etcd.member[etcd01].reconfigure", "etcd.member[etcd02].reconfigure", "etcd.health"]


def test_client_port_change_restarts_ask_via_on_its_listed_url_too(lab: Cluster) -> None:
    # before init (no API server uses etcd yet); etcd02 has not moved when etcd01 restarts
    plan = plan_of(edited(lab, clientPort=2479), running(lab))
    assert etcd_ids(plan) == [f"etcd.member[{n}].reconfigure" for n in NAMES] + ["etcd.health"]
    first = plan.steps()[0]
    assert isinstance(first, ReconfigureEtcdMember) and first.via == "etcd02"
    assert first.via_urls == ("https://198.18.0.22:2379",)
    assert "ETCD_ADVERTISE_CLIENT_URLS" in first.reason


def test_data_dir_change_is_a_replacement_not_a_restart(lab: Cluster) -> None:
    s = running(lab)
    for name in NAMES:  # the probe looks at the spec's (new) data dir: absent
        s.etcd_facts(name, data_dir="/srv/etcd", data_dir_state="absent", data_dir_entries=0,
                     data_dir_names=())
    plan = plan_of(edited(lab, dataDir="/srv/etcd"), s)
    chain = [f"etcd.member[{n}].{k}" for n in NAMES for k in ("remove", "add", "start", "promote")]
    assert etcd_ids(plan) == [*chain, "etcd.health"]
    change = plan.diff.get("etcd.member[etcd02]")
    assert change is not None and change.actions == ["delete", "create"]
    assert ("its data dir moves from /var/lib/etcd to /srv/etcd (etcd keeps a member's identity in "
            "its data dir: a restart on a new one would crash it; the old /var/lib/etcd is left as "
            "it is)") in change.reason
    assert not any(s.id.endswith(".reconfigure") for s in plan.steps())


def test_an_adopted_etcd_with_its_own_data_dir_is_left_as_it_runs(lab: Cluster) -> None:
    # built by hand under Debian's unit: no hactl etcd.env, data in /var/lib/etcd/default
    s = running(lab)
    for name in NAMES:
        facts = s.hosts[name].etcd
        assert facts is not None
        s.etcd_facts(name, env_present=False, env={}, env_sha256=None, data_dir_state="nested",
                     nested_member="/var/lib/etcd/default/member",
                     running_env={**facts.env, "ETCD_DATA_DIR": "/var/lib/etcd/default"})
    assert etcd_ids(plan_of(lab, s)) == []
    # nor are its peer URLs "updated": hactl would restart it from its own files
    assert etcd_ids(plan_of(edited(lab, peerPort=2390), s)) == []


@pytest.mark.parametrize("edit", [{"clientPort": 2479}, {"peerPort": 2390}])
def test_restart_while_another_member_is_unreachable_is_refused(lab: Cluster, edit: dict[str, int]) -> None:
    s = running(lab).unreachable("etcd03", "connection timed out")
    with pytest.raises(PlanError) as info:
        plan_of(edited(lab, **edit), s)
    text = str(info.value)
    assert ("refusing to restart etcd member etcd01: etcd03 (unreachable) is not healthy, and hactl "
            "restarts a running member only while every other member is healthy. Bring etcd03 "
            "(unreachable) back first") in text
    assert "refusing to restart etcd member etcd02: etcd03 (unreachable)" in text


def test_restart_while_another_member_is_unhealthy_is_refused(lab: Cluster) -> None:
    s = sick(running(lab), "etcd03")
    with pytest.raises(PlanError) as info:
        plan_of(edited(lab, clientPort=2479), s)
    assert "etcd03 (context deadline exceeded) is not healthy" in str(info.value)


def test_a_stopped_member_the_plan_starts_first_does_not_block_restarts(lab: Cluster) -> None:
    s = running(lab).etcd_facts("etcd03", active=False, members=None, status=None, health=None)
    plan = plan_of(edited(lab, clientPort=2479), s)
    assert etcd_ids(plan) == ["etcd.member[etcd03].reconfigure", "etcd.member[etcd01].reconfigure",
                              "etcd.member[etcd02].reconfigure", "etcd.health"]
    steps = {st.id: st for st in plan.steps()}
    assert not steps["etcd.member[etcd03].reconfigure"].restart  # type: ignore[attr-defined]
    assert steps["etcd.member[etcd01].reconfigure"].restart  # type: ignore[attr-defined]


@pytest.mark.parametrize(("voters", "healthy", "member_healthy", "left", "need"),
                         [(1, 1, True, 0, 1), (3, 2, True, 1, 2), (5, 3, True, 2, 3)])
def test_restart_problem_says_the_arithmetic(voters: int, healthy: int, member_healthy: bool,
                                             left: int, need: int) -> None:
    text = refusals.restart_problem("etcd01", voters, healthy, member_healthy=member_healthy,
                                    unhealthy_others=[])
    assert text is not None
    assert (f"the cluster has {voters} voting members, {healthy} healthy; while etcd01 restarts "
            f"{left} would be healthy, below the quorum ⌊{voters}/2⌋+1 = {need}") in text
    assert ("single-member" in text) == (voters == 1)
    assert refusals.restart_problem("etcd01", 3, 2, member_healthy=False, unhealthy_others=[]) is None


# -- H1 at run time: fresh facts, whole-cluster health --------------------------------------


def members_json(*members: tuple[int, str, str, bool]) -> str:
    return json.dumps({"header": {}, "members": [
        {"ID": i, "name": n, "peerURLs": [peer], "clientURLs": [URL[n]] if n else [],
         **({"isLearner": True} if learner else {})} for i, n, peer, learner in members]})


def peer(name: str, port: int = 2380) -> str:
    return URL[name].replace(":2379", f":{port}")


THREE = tuple((i, n, peer(n), False) for i, n in enumerate(NAMES, 1))


def health_json(**healthy: bool) -> str:
    return json.dumps([{"endpoint": URL[n], "health": ok} for n, ok in healthy.items()])


def restart_step(**fields: Any) -> ReconfigureEtcdMember:
    return ReconfigureEtcdMember(id="s", host="etcd01", title="t", reason="r", via="etcd02",
                                 restart=True, timeout=10.5, **fields)


async def test_restart_step_refuses_on_fresh_facts_when_another_member_is_down(lab: Cluster) -> None:
    ctx = Ctx(lab)
    ctx.transport("etcd01").on(("systemctl",))
    via = ctx.transport("etcd02")
    via.on(re.compile("member list"), stdout=members_json(*THREE))
    via.on(re.compile("endpoint health"), stdout=health_json(etcd01=True, etcd02=True, etcd03=False))
    with pytest.raises(PlanError, match="refusing to restart etcd member etcd01: etcd03 "
                       r"\(health check failed\) is not healthy"):
        await restart_step(rewrite=True).run(ctx)
    assert ctx.argvs("etcd01") == [("systemctl", "is-active", "--quiet", "etcd")]
    assert ctx.transport("etcd01").files == {}  # nothing written, nothing restarted


async def test_restart_step_waits_for_the_whole_cluster_not_only_its_member(lab: Cluster) -> None:
    ctx = Ctx(lab)
    ctx.transport("etcd01").on(("systemctl",))
    via = ctx.transport("etcd02")
    via.on(re.compile("member list"), stdout=members_json(*THREE))
    answers = iter([health_json(etcd01=True, etcd02=True, etcd03=True)])  # the gate passes

    def health(_call: object) -> Result:  # then etcd03 drops out while etcd01 restarts
        return Result(0, next(answers, health_json(etcd01=True, etcd02=True, etcd03=False)), "")

    via.on(re.compile("endpoint health"), respond=health)  # type: ignore[arg-type]
    with pytest.raises(CommandError, match="endpoint health false on etcd03"):
        await restart_step(rewrite=False).run(ctx)
    assert ("systemctl", "restart", "--no-block", "etcd") in ctx.argvs("etcd01")


async def test_restart_step_of_a_stopped_member_needs_no_gate(lab: Cluster) -> None:
    ctx = Ctx(lab)
    m1 = ctx.transport("etcd01")
    m1.on(("systemctl",))
    m1.on(("systemctl", "is-active"), exit_status=3)  # inactive: a start cannot lower health
    via = ctx.transport("etcd02")
    via.on(re.compile("member list"), stdout=members_json(*THREE))
    via.on(re.compile("endpoint health"), stdout=health_json(etcd01=True, etcd02=True, etcd03=True))
    await restart_step(rewrite=False).run(ctx)
    assert ("etcd member running", {}) in ctx.events


async def test_update_step_changes_the_peer_url_through_another_member(lab: Cluster) -> None:
    moved = edited(lab, peerPort=2390)
    ctx = Ctx(moved)
    via = ctx.transport("etcd02")
    via.on(re.compile("member list"), stdout=members_json(*THREE))
    via.on(re.compile("endpoint health"), stdout=health_json(etcd01=True, etcd02=True, etcd03=True))
    via.on(re.compile("member update"))
    await UpdateEtcdMember(id="s", host="etcd02", title="t", reason="r", member="etcd01").run(ctx)
    update = next(a for a in ctx.argvs("etcd02") if "update" in a)
    assert update[-4:] == ("member", "update", "1", "--peer-urls=https://198.18.0.21:2390")
    assert "--endpoints=https://198.18.0.22:2379" in update
    # done already (a re-run after a kill): nothing is asked again
    ctx2 = Ctx(moved)
    via2 = ctx2.transport("etcd02")
    via2.on(re.compile("member list"), stdout=members_json((1, "etcd01", peer("etcd01", 2390), False), *THREE[1:]))
    await UpdateEtcdMember(id="s", host="etcd02", title="t", reason="r", member="etcd01").run(ctx2)
    assert not any("update" in a or "health" in " ".join(a) for a in ctx2.argvs("etcd02")[1:])


async def test_update_step_refuses_while_another_member_is_down(lab: Cluster) -> None:
    ctx = Ctx(edited(lab, peerPort=2390))
    via = ctx.transport("etcd02")
    via.on(re.compile("member list"), stdout=members_json(*THREE))
    via.on(re.compile("endpoint health"), stdout=health_json(etcd01=True, etcd02=True))
    with pytest.raises(PlanError, match=r"etcd03 .* is not healthy"):
        await UpdateEtcdMember(id="s", host="etcd02", title="t", reason="r", member="etcd01").run(ctx)
    assert not any("update" in a for a in ctx.argvs("etcd02"))


async def test_remove_step_retries_while_etcd_says_unhealthy_cluster(lab: Cluster) -> None:
    # etcd's strict reconfig check: right after a start or a promotion it refuses removals
    from hactl.plan.steps import RemoveEtcdMember

    ctx = Ctx(lab)
    via = ctx.transport("etcd02")
    via.on(re.compile("member list"), stdout=members_json(*THREE))
    via.on(re.compile("endpoint health"), stdout=health_json(etcd01=True, etcd02=True, etcd03=True))
    answers = iter([Result(1, "", "Error: etcdserver: unhealthy cluster\n")] * 2)
    via.on(re.compile("member remove"), respond=lambda _c: next(answers, Result(0, "removed", "")))
    await RemoveEtcdMember(id="s", host="etcd02", title="t", reason="r", member="etcd01",
                           member_id="1").run(ctx)
    assert sum("remove" in a for a in ctx.argvs("etcd02")) == 3
    # any other error fails at once
    ctx = Ctx(lab)
    via = ctx.transport("etcd02")
    via.on(re.compile("member list"), stdout=members_json(*THREE))
    via.on(re.compile("endpoint health"), stdout=health_json(etcd01=True, etcd02=True, etcd03=True))
    via.on(re.compile("member remove"), exit_status=1, stderr="Error: permission denied\n")
    with pytest.raises(CommandError, match="permission denied"):
        await RemoveEtcdMember(id="s", host="etcd02", title="t", reason="r", member="etcd01",
                               member_id="1").run(ctx)
    assert sum("remove" in a for a in ctx.argvs("etcd02")) == 1


# -- M3: written is not active ---------------------------------------------------------------


def test_env_written_but_never_loaded_is_restarted(lab: Cluster) -> None:
    s = running(lab)
    facts = s.hosts["etcd02"].etcd
    assert facts is not None
    old = dict(facts.env, ETCD_INITIAL_CLUSTER_STATE="new")
    new = dict(facts.env, ETCD_INITIAL_CLUSTER_STATE="existing")
    s.etcd_facts("etcd02", env=new, running_env=old)
    plan = plan_of(lab, s)
    assert etcd_ids(plan) == ["etcd.member[etcd02].restart", "etcd.health"]
    step = plan.steps()[0]
    assert isinstance(step, ReconfigureEtcdMember) and step.restart and not step.rewrite
    assert ("the running etcd was started before /etc/etcd/etcd.env was last written (it runs "
            "with other ETCD_INITIAL_CLUSTER_STATE); restart it") in step.reason
    # loaded: no changes
    s.etcd_facts("etcd02", running_env=new)
    assert etcd_ids(plan_of(lab, s)) == []


def test_probe_reads_the_running_process_environment(tmp_path: Path) -> None:
    # a real process with ETCD_* in its environment stands for etcd; systemctl says its MainPID
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                            env={"ETCD_NAME": "etcd01", "ETCD_DATA_DIR": "/var/lib/etcd", "OTHER": "x"})
    try:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        fake = bin_dir / "systemctl"
        fake.write_text(f"#!/bin/sh\necho {proc.pid}\n")
        fake.chmod(0o755)
        data = tmp_path / "data"
        data.mkdir()
        for name in ("README", "lost+found"):
            (data / name).mkdir()
        script = etcd_facts.EtcdFiles(data_dir=str(data)).script()
        out = subprocess.run(["sh", "-c", f"{etcd_facts.ACTIVE_VAR}=active\n{script}"], text=True,
                             capture_output=True, check=True,
                             env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}).stdout
        info = etcd_facts.EtcdFiles().parse(out)
        assert info.running_env == {"ETCD_NAME": "etcd01", "ETCD_DATA_DIR": "/var/lib/etcd"}
        assert (info.data_dir_state, info.data_dir_entries, info.data_dir_names) == (
            "other", 2, ("README", "lost+found"))
        stopped = subprocess.run(["sh", "-c", script], text=True, capture_output=True, check=True,
                                 env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}).stdout
        assert etcd_facts.EtcdFiles().parse(stopped).running_env is None  # not active: not read
    finally:
        proc.kill()
        proc.wait()


def test_probe_asks_etcd_where_it_listens_now(tmp_path: Path) -> None:
    # the spec moved clientPort to 2479; the running member still listens on 2379 (not yet
    # restarted): the probe's etcdctl asks it there, not on the spec's port
    listen = "https://198.18.0.22:2379,https://127.0.0.1:2379"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                            env={"ETCD_LISTEN_CLIENT_URLS": listen})
    try:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for name, body in (("systemctl", f"echo {proc.pid}"), ("etcdctl", 'echo "$@"')):
            (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
            (bin_dir / name).chmod(0o755)
        files = etcd_facts.EtcdFiles(data_dir=str(tmp_path / "data"))
        listing = etcd_facts.EtcdMemberList(endpoint="https://127.0.0.1:2479")
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}

        def argv(active: str) -> str:
            script = (f"{etcd_facts.ACTIVE_VAR}={active}\nf() {{\n{files.script()}\n}}\nf >/dev/null\n"
                      f"g() {{\n{listing.script()}\n}}\ng")
            return subprocess.run(["sh", "-c", script], text=True, capture_output=True, env=env).stdout

        assert argv("active").startswith("--endpoints=https://127.0.0.1:2379 --cacert=")
        proc.kill()
        proc.wait()
        (bin_dir / "systemctl").write_text("#!/bin/sh\necho 0\n")  # no main process: the spec's port
        assert argv("active").startswith("--endpoints=https://127.0.0.1:2479 --cacert=")
    finally:
        proc.kill()
        proc.wait()


# -- M7: a learner still starting ------------------------------------------------------------


def test_learner_still_starting_waits_for_its_name_not_its_health(lab: Cluster) -> None:
    s = running(lab)
    listed = s.hosts["etcd01"].etcd.members  # type: ignore[union-attr]
    assert listed is not None
    learner = tuple(replace(m, is_learner=True) if m.name == "etcd03" else m for m in listed)
    for name in NAMES:
        s.etcd_facts(name, members=learner)
    s.etcd_facts("etcd03", active=False, members=None, health=None, status=None, running_env=None)
    plan = plan_of(lab, s)
    assert etcd_ids(plan) == ["etcd.member[etcd03].start", "etcd.member[etcd03].promote", "etcd.health"]
    start = plan.steps()[0]
    assert isinstance(start, ReconfigureEtcdMember) and start.learner and not start.restart


async def test_learner_start_step_never_asks_its_health(lab: Cluster) -> None:
    ctx = Ctx(lab)
    ctx.transport("etcd03").on(("systemctl",))
    via = ctx.transport("etcd01")
    # the real answer a learner gives to `endpoint health`
    via.on(re.compile("endpoint health"), stdout=json.dumps([{"endpoint": URL["etcd03"], "health": False,
                                                             "error": "etcdserver: rpc not supported for learner"}]))
    via.on(re.compile("member list"), stdout=members_json(*THREE[:2], (3, "etcd03", peer("etcd03"), True)))
    await ReconfigureEtcdMember(id="s", host="etcd03", title="t", reason="r", via="etcd01",
                                learner=True, timeout=20.0).run(ctx)
    assert not any("health" in a for a in ctx.argvs("etcd01") + ctx.argvs("etcd03"))


# -- M8: the API servers' etcd endpoints ------------------------------------------------------


def test_client_port_change_of_an_initialised_cluster_is_refused(lab: Cluster) -> None:
    with pytest.raises(PlanError) as info:
        plan_of(edited(lab, clientPort=2479), running(lab, init=True))
    assert ("etcd.clientPort (live 2379, wanted 2479): the API servers reach etcd at "
            "https://198.18.0.21:2379 (kubeadm-config etcd.external.endpoints, kube-apiserver "
            "--etcd-servers), the spec would move it to https://198.18.0.21:2479. Put the live "
            "value back in the spec (hactl points the API servers at other members, but does not "
            "move a running member's client URL yet)") in str(info.value)


def test_member_address_change_of_an_initialised_cluster_is_refused(lab: Cluster) -> None:
    data = lab.model_dump(by_alias=True, mode="json")
    data["etcd"]["members"][1]["address"] = "198.18.0.42"
    moved = Cluster.model_validate(data)
    s = running(lab, init=True)
    with pytest.raises(PlanError) as info:
        build_plan(moved, s.observed(), now=PROBED_AT)
    assert ("etcd.members[1].address of etcd02 (live 198.18.0.22, wanted 198.18.0.42): the API "
            "servers reach etcd at https://198.18.0.22:2379") in str(info.value)


def test_member_address_change_is_refused_before_init_too(lab: Cluster) -> None:
    # its certificates name the old address: member update + restart would cut it off by TLS
    data = lab.model_dump(by_alias=True, mode="json")
    data["etcd"]["members"][2]["address"] = "198.18.0.43"
    with pytest.raises(PlanError) as info:
        build_plan(Cluster.model_validate(data), running(lab).observed(), now=PROBED_AT)
    assert ("etcd.members[2].address of etcd03 (live 198.18.0.23, wanted 198.18.0.43): hactl "
            "does not move an etcd member to another address") in str(info.value)


def test_a_new_member_of_an_initialised_cluster_is_not_an_endpoint_move(lab: Cluster) -> None:
    s = Synthetic(lab).etcd(["etcd01", "etcd02"]).lb()
    s.join(*[h.name for h in lab.masters])
    assert "etcd.member[etcd03].add" in etcd_ids(plan_of(lab, s))


# -- L5: ETCD_INITIAL_CLUSTER from the member list --------------------------------------------


def test_initial_cluster_takes_adopted_members_as_listed(lab: Cluster) -> None:
    listed = parse_member_list(json.dumps({"members": [
        {"ID": 1, "name": "etcd01", "peerURLs": [peer("etcd01")]},
        {"ID": 9, "name": "Etcd_9", "peerURLs": ["https://etcd9.example.com:2380"]},
        {"ID": 3, "peerURLs": [peer("etcd03")], "isLearner": True},  # etcd03 itself, unstarted
        {"ID": 4, "peerURLs": ["https://198.18.0.44:2380"], "isLearner": True}]}))
    got = initial_cluster(Ctx(lab), listed, lab.host("etcd03"))
    assert got == ("m4=https://198.18.0.44:2380,Etcd_9=https://etcd9.example.com:2380,"
                   "etcd01=https://198.18.0.21:2380,etcd03=https://198.18.0.23:2380")


@pytest.mark.parametrize(("name", "url"), [("a,b", "https://x:2380"), ('e"9', "https://x:2380"),
                                           ("e9", "https://x:2380\nETCD_X=1"), ("e=9", "https://x:2380")])
def test_initial_cluster_refuses_what_etcd_env_cannot_quote(lab: Cluster, name: str, url: str) -> None:
    listed = parse_member_list(json.dumps({"members": [{"ID": 9, "name": name, "peerURLs": [url]}]}))
    with pytest.raises(CommandError, match=r"cannot be written into /etc/etcd/etcd\.env"):
        initial_cluster(Ctx(lab), listed, lab.host("etcd03"))


# -- C1: what a new member's start does to its data dir ---------------------------------------


def test_add_says_the_data_dir_will_be_emptied_and_what_is_in_it(lab: Cluster) -> None:
    s = Synthetic(lab).etcd(["etcd01", "etcd02"]).lb()
    s.etcd_facts("etcd03", data_dir_state="other", data_dir_entries=14,
                 data_dir_names=tuple(f"f{i:02d}" for i in range(10)))
    change = plan_of(lab, s).diff.get("etcd.member[etcd03]")
    assert change is not None and change.reason.endswith(
        "its data dir /var/lib/etcd holds 14 entries ('f00', 'f01', 'f02', 'f03', 'f04', 'f05', "
        "'f06', 'f07', 'f08', 'f09', and 4 more) but no member data: they will be moved aside into "
        "/var/lib/etcd.hactl-old-<UTC time> (nothing is deleted) and the member starts on the "
        "emptied directory")


def test_bootstrap_says_so_even_without_the_listing(lab: Cluster) -> None:
    # facts without the entry listing (an older saved probe): the plan still says it moves them
    s = Synthetic(lab).etcd_facts("etcd01", data_dir_state="other")
    plan = plan_of(lab, s)
    step = next(st for st in plan.steps() if st.id == "etcd.member[etcd01].bootstrap")
    assert step.reason.endswith(
        "its data dir /var/lib/etcd holds entries (not listed by the probe) but no member data: "
        "they will be moved aside into /var/lib/etcd.hactl-old-<UTC time> (nothing is deleted) "
        "and the member starts on the emptied directory")
    assert any("moved aside" in c or "aside" in c for c in step.commands())


def test_data_dir_preparation_moves_aside_and_never_chmods_a_full_dir(tmp_path: Path) -> None:
    data, aside = tmp_path / "data", tmp_path / "data.hactl-old-x"
    run = lambda: subprocess.run(cmd.prepare_data_dir(str(data), str(aside)),  # noqa: E731
                                 capture_output=True, text=True, check=True)
    run()  # absent: created 0700
    assert data.stat().st_mode & 0o777 == 0o700
    data.chmod(0o755)
    (data / "README").write_text("keep me")
    (data / ".hidden").mkdir()
    run()
    assert sorted(p.name for p in aside.iterdir()) == [".hidden", "README"]
    assert (aside / "README").read_text() == "keep me"  # moved, not deleted
    assert list(data.iterdir()) == [] and data.stat().st_mode & 0o777 == 0o700
    (data / "x").write_text("")
    with pytest.raises(subprocess.CalledProcessError):
        run()  # the aside dir exists already: nothing moved, nothing chmodded
    assert (data / "x").exists()
