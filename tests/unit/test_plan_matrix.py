"""Planner over a matrix of observed states: the exact steps and the exact edges."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest

from hactl.diff import client_url, peer_url
from hactl.errors import PlanError
from hactl.facts.model import EtcdHealth, EtcdMember
from hactl.plan.planner import Plan, build_plan
from hactl.plan.synthetic import PROBED_AT, Synthetic, member_id
from hactl.spec.load import load_file
from hactl.spec.models import Cluster

SPECS = Path(__file__).resolve().parents[2] / "specs"


@pytest.fixture(scope="module")
def lab() -> Cluster:
    return load_file(str(SPECS / "lab.yaml")).cluster


def plan_of(cluster: Cluster, synthetic: Synthetic) -> Plan:
    return build_plan(cluster, synthetic.observed(), now=PROBED_AT)


def ids(plan: Plan) -> list[str]:
    return [s.id for s in plan.steps()]


def edges(plan: Plan) -> set[tuple[str, str]]:
    return set(plan.graph.edges())


JOINS_AFTER_INIT = {
    ("master[master01].init", "master[master02].join"),
    ("master[master02].join", "master[master03].join"),
    ("master[master01].init", "worker[worker01].join"),
    ("master[master01].init", "worker[worker02].join"),
    # the pod network right after init; its wait after every join (issue 14)
    ("master[master01].init", "network.install"),
    ("network.install", "network.wait"),
    ("master[master03].join", "network.wait"),
    ("worker[worker01].join", "network.wait"),
    ("worker[worker02].join", "network.wait"),
    ("network.wait", "cluster.verify"),
}


def test_empty_hosts_plan_the_full_bring_up(lab: Cluster) -> None:
    plan = plan_of(lab, Synthetic(lab))
    assert ids(plan) == [
        "pki.etcd-ca",
        "pki.etcd[etcd01]", "pki.etcd[etcd02]", "pki.etcd[etcd03]",
        "etcd.member[etcd01].bootstrap", "etcd.member[etcd02].bootstrap",
        "etcd.member[etcd03].bootstrap",
        "etcd.health",
        "lb[lb01].haproxy",
        "master[master01].etcd-client-certs",
        "master[master01].init",
        "network.install",
        "master[master02].join", "master[master03].join",
        "worker[worker01].join", "worker[worker02].join",
        "network.wait",
        "cluster.verify",
    ]
    members = ("etcd01", "etcd02", "etcd03")
    assert edges(plan) == {
        *{("pki.etcd-ca", f"pki.etcd[{m}]") for m in members},
        *{("pki.etcd-ca", f"etcd.member[{m}].bootstrap") for m in members},
        # every member's certificates before any bootstrap: the members start together
        *{(f"pki.etcd[{c}]", f"etcd.member[{m}].bootstrap") for m in members for c in members},
        *{(f"etcd.member[{m}].bootstrap", "etcd.health") for m in members},
        ("pki.etcd-ca", "master[master01].etcd-client-certs"),
        ("etcd.health", "master[master01].etcd-client-certs"),
        ("etcd.health", "master[master01].init"),
        ("lb[lb01].haproxy", "master[master01].init"),
        ("master[master01].etcd-client-certs", "master[master01].init"),
        *JOINS_AFTER_INIT,
    }
    assert plan.counts() == (14, 0, 0)


def test_etcd_only(lab: Cluster) -> None:
    plan = plan_of(lab, Synthetic(lab).etcd())
    assert ids(plan) == [
        "lb[lb01].haproxy", "master[master01].etcd-client-certs", "master[master01].init",
        "network.install", "master[master02].join", "master[master03].join",
        "worker[worker01].join", "worker[worker02].join", "network.wait", "cluster.verify",
    ]
    assert edges(plan) == {
        ("lb[lb01].haproxy", "master[master01].init"),
        ("master[master01].etcd-client-certs", "master[master01].init"),
        *JOINS_AFTER_INIT,
    }


def test_lb_only(lab: Cluster) -> None:
    plan = plan_of(lab, Synthetic(lab).lb())
    assert "lb[lb01].haproxy" not in ids(plan)
    assert ids(plan)[:8] == [
        "pki.etcd-ca", "pki.etcd[etcd01]", "pki.etcd[etcd02]", "pki.etcd[etcd03]",
        "etcd.member[etcd01].bootstrap", "etcd.member[etcd02].bootstrap",
        "etcd.member[etcd03].bootstrap", "etcd.health",
    ]
    assert ("etcd.health", "master[master01].init") in edges(plan)
    assert not any(a.startswith("lb[") for a, _ in edges(plan))


def test_first_master_only(lab: Cluster) -> None:
    plan = plan_of(lab, Synthetic(lab).etcd().lb().init())
    assert ids(plan) == [
        "cluster.bootstrap-token", "cluster.certificate-key",
        "master[master02].join", "master[master03].join",
        "worker[worker01].join", "worker[worker02].join", "cluster.verify",
    ]
    assert edges(plan) == {
        ("cluster.bootstrap-token", "master[master02].join"),
        ("cluster.certificate-key", "master[master02].join"),
        ("master[master02].join", "master[master03].join"),
        ("cluster.bootstrap-token", "worker[worker01].join"),
        ("cluster.bootstrap-token", "worker[worker02].join"),
        ("master[master03].join", "cluster.verify"),
        ("worker[worker01].join", "cluster.verify"),
        ("worker[worker02].join", "cluster.verify"),
    }
    assert plan.counts() == (5, 1, 0)
    assert {s.host for s in plan.steps() if s.id.startswith("cluster.") and s.host} == {"master01"}


def test_one_join_done(lab: Cluster) -> None:
    plan = plan_of(lab, Synthetic(lab).etcd().lb().init().join("master02", "worker01"))
    assert ids(plan) == [
        "cluster.bootstrap-token", "cluster.certificate-key", "master[master03].join",
        "worker[worker02].join", "cluster.verify",
    ]
    assert edges(plan) == {
        ("cluster.bootstrap-token", "master[master03].join"),
        ("cluster.certificate-key", "master[master03].join"),
        ("cluster.bootstrap-token", "worker[worker02].join"),
        ("master[master03].join", "cluster.verify"),
        ("worker[worker02].join", "cluster.verify"),
    }


def test_only_workers_missing_needs_no_certificate_key(lab: Cluster) -> None:
    plan = plan_of(lab, Synthetic(lab).etcd().lb().init().join("master02", "master03"))
    assert ids(plan) == ["cluster.bootstrap-token", "worker[worker01].join",
                         "worker[worker02].join", "cluster.verify"]


def test_converged_has_no_changes(lab: Cluster) -> None:
    plan = plan_of(lab, Synthetic(lab).converged())
    assert ids(plan) == []
    assert plan.counts() == (0, 0, 0)
    assert not plan.has_changes


def _with_members(s: Synthetic, cluster: Cluster, members: tuple[EtcdMember, ...]) -> Synthetic:
    for host in cluster.etcd_members:
        facts = s.hosts[host.name].etcd
        if facts is not None and facts.members is not None:
            s.etcd_facts(host.name, members=members)
    return s


def test_member_missing_is_added_as_learner_then_started_then_promoted(lab: Cluster) -> None:
    s = Synthetic(lab).etcd(["etcd01", "etcd02"]).lb()
    s.join(*[h.name for h in lab.masters], *[h.name for h in lab.workers])
    plan = plan_of(lab, s)
    assert ids(plan) == [
        "pki.etcd[etcd03]",
        "etcd.member[etcd03].add", "etcd.member[etcd03].start", "etcd.member[etcd03].promote",
        "etcd.health", "cluster.verify",
    ]
    assert edges(plan) == {
        ("pki.etcd[etcd03]", "etcd.member[etcd03].add"),
        ("etcd.member[etcd03].add", "etcd.member[etcd03].start"),
        ("etcd.member[etcd03].start", "etcd.member[etcd03].promote"),
        ("etcd.member[etcd03].promote", "etcd.health"),
        ("etcd.health", "cluster.verify"),
    }
    steps = {st.id: st for st in plan.steps()}
    assert steps["etcd.member[etcd03].add"].host == "etcd01"  # through a running member
    assert steps["etcd.member[etcd03].start"].host == "etcd03"
    assert steps["pki.etcd[etcd03]"].ca_host == "etcd01"  # type: ignore[attr-defined]


def _extra(cluster: Cluster, name: str = "etcd04") -> EtcdMember:
    return EtcdMember(member_id(name), name, ("https://198.18.0.24:2380",), ("https://198.18.0.24:2379",))


def test_extra_member_is_removed_through_another_member(lab: Cluster) -> None:
    s = Synthetic(lab).converged()
    listed = s.hosts["etcd01"].etcd.members  # type: ignore[union-attr]
    assert listed is not None
    _with_members(s, lab, (*listed, _extra(lab)))
    plan = plan_of(lab, s)
    assert ids(plan) == ["etcd.member[etcd04].remove", "etcd.health", "cluster.verify"]
    assert edges(plan) == {("etcd.member[etcd04].remove", "etcd.health"),
                           ("etcd.health", "cluster.verify")}
    step = plan.steps()[0]
    assert step.host == "etcd01" and step.member_id == member_id("etcd04")  # type: ignore[attr-defined]
    assert plan.counts() == (0, 0, 1)


def test_removal_that_breaks_quorum_is_refused_with_the_arithmetic(lab: Cluster) -> None:
    s = Synthetic(lab).converged()
    listed = s.hosts["etcd01"].etcd.members  # type: ignore[union-attr]
    assert listed is not None
    _with_members(s, lab, (*listed, _extra(lab)))
    for name in ("etcd02", "etcd03"):
        facts = s.hosts[name].etcd
        assert facts is not None and facts.health is not None
        s.etcd_facts(name, health=EtcdHealth(facts.health.endpoint, False, "timeout"))
    with pytest.raises(PlanError) as info:
        plan_of(lab, s)
    text = str(info.value)
    assert "refusing to remove etcd member etcd04" in text
    assert "4 voting members, 1 healthy" in text
    assert "⌊3/2⌋+1 = 2 healthy voters, but only 1" in text


def test_failed_member_is_replaced_remove_first(lab: Cluster) -> None:
    s = Synthetic(lab).converged()
    s.etcd_facts("etcd03", active=False, data_dir_state="empty", members=None, status=None,
                 health=None, ca_fingerprint=None)
    plan = plan_of(lab, s)
    assert ids(plan) == [
        "pki.etcd[etcd03]",
        "etcd.member[etcd03].remove", "etcd.member[etcd03].add", "etcd.member[etcd03].start",
        "etcd.member[etcd03].promote", "etcd.health", "cluster.verify",
    ]
    assert ("pki.etcd[etcd03]", "etcd.member[etcd03].remove") in edges(plan)
    assert ("etcd.member[etcd03].remove", "etcd.member[etcd03].add") in edges(plan)
    assert plan.diff.get("etcd.member[etcd03]").actions == ["delete", "create"]  # type: ignore[union-attr]


def test_stopped_member_is_started_alone(lab: Cluster) -> None:
    s = Synthetic(lab).converged()
    s.etcd_facts("etcd02", active=False, members=None, status=None, health=None)
    plan = plan_of(lab, s)
    assert ids(plan) == ["etcd.member[etcd02].start", "etcd.health", "cluster.verify"]
    assert plan.steps()[0].host == "etcd02"


def test_drifted_haproxy_config(lab: Cluster) -> None:
    s = Synthetic(lab).converged().lb(config="global\n    maxconn 10\n")
    plan = plan_of(lab, s)
    assert ids(plan) == ["lb[lb01].haproxy", "cluster.verify"]
    assert edges(plan) == {("lb[lb01].haproxy", "cluster.verify")}
    assert plan.counts() == (0, 1, 0)
    change = plan.diff.get("lb[lb01].haproxy_cfg")
    assert change is not None and "differs" in change.reason


def test_unreachable_host_not_needed_is_reported(lab: Cluster) -> None:
    plan = plan_of(lab, Synthetic(lab).converged().unreachable("worker02", "connection timed out"))
    assert ids(plan) == []
    assert plan.unreachable == {"worker02": "connection timed out"}


def test_unreachable_host_that_a_step_needs_refuses_the_plan(lab: Cluster) -> None:
    s = Synthetic(lab).etcd().lb().init().unreachable("master03", "connection refused")
    with pytest.raises(PlanError) as info:
        plan_of(lab, s)
    assert "master03: unreachable (connection refused)" in str(info.value)
    assert "Node is not registered" in str(info.value)


def test_unreachable_etcd_member_on_fresh_hosts_is_needed(lab: Cluster) -> None:
    with pytest.raises(PlanError, match="etcd02: unreachable"):
        plan_of(lab, Synthetic(lab).unreachable("etcd02"))


def test_etcd_too_old_for_kubernetes_131_is_refused(lab: Cluster) -> None:
    # etcd.version left out: rule 3 is checked against the probed version alone (a spec version
    # other than the members' is refused on its own: tests/unit/test_refusals_drift.py)
    new = lab.model_copy(update={"kubernetes": lab.kubernetes.model_copy(update={"version": "v1.31.2"}),
                                 "etcd": lab.etcd.model_copy(update={"version": None})})
    with pytest.raises(PlanError) as info:
        plan_of(new, Synthetic(new, etcd_version="3.5.9").etcd())
    assert "etcd01, etcd02, etcd03 run etcd 3.5.9" in str(info.value)
    assert "3.5.11" in str(info.value)
    plan_of(new, Synthetic(new, etcd_version="3.5.15").etcd())  # new enough


def test_init_against_foreign_registry_data_is_refused_with_how_to_wipe(lab: Cluster) -> None:
    with pytest.raises(PlanError) as info:
        plan_of(lab, Synthetic(lab).etcd(registry_keys=42).lb())
    text = str(info.value)
    assert "already holds another cluster's /registry data" in text
    assert "del /registry --prefix" in text


def test_existing_cluster_with_another_endpoint_is_refused(lab: Cluster) -> None:
    s = Synthetic(lab).converged().init(endpoint="old-lb.example:6443")
    with pytest.raises(PlanError, match=r"controlPlaneEndpoint is old-lb\.example:6443"):
        plan_of(lab, s)


def test_stacked_topology_has_no_etcd_steps(lab: Cluster) -> None:
    stacked = load_file(str(SPECS / "stacked.yaml")).cluster
    plan = plan_of(stacked, Synthetic(stacked))
    assert ids(plan) == ["lb[lb01].haproxy", "master[master01].init", "network.install",
                         "master[master02].join", "master[master03].join", "worker[worker01].join",
                         "network.wait", "cluster.verify"]
    assert ("master[master02].join", "master[master03].join") in edges(plan)


def test_ids_are_unique_and_every_step_names_its_host_and_reason(lab: Cluster) -> None:
    plan = plan_of(lab, Synthetic(lab))
    for step in plan.steps():
        assert step.reason and step.title
        assert step.host or step.kind == "verify"
    # peer/client URLs agree with the renderer's
    from hactl.render import etcd as render_etcd

    host = lab.etcd_members[0]
    assert peer_url(lab, host) == render_etcd.peer_url(host, lab)
    assert client_url(lab, host) == render_etcd.client_url(host, lab)


def test_learner_left_behind_is_promoted(lab: Cluster) -> None:
    s = Synthetic(lab).converged()
    listed = s.hosts["etcd01"].etcd.members  # type: ignore[union-attr]
    assert listed is not None
    learner = tuple(replace(m, is_learner=True) if m.name == "etcd03" else m for m in listed)
    _with_members(s, lab, learner)
    plan = plan_of(lab, s)
    assert ids(plan) == ["etcd.member[etcd03].promote", "etcd.health", "cluster.verify"]


def test_client_certs_already_on_the_first_master_are_not_planned_again(lab: Cluster) -> None:
    s = Synthetic(lab).etcd().lb()
    facts = s.hosts["master01"].kubernetes
    assert facts is not None
    s._set("master01", kubernetes=replace(facts, pki_files=(
        "apiserver-etcd-client.crt", "apiserver-etcd-client.key", "etcd/ca.crt")))
    plan = plan_of(lab, s)
    assert "master[master01].etcd-client-certs" not in ids(plan)
    assert ("lb[lb01].haproxy", "master[master01].init") not in edges(plan)  # LB already fine
    assert ids(plan)[0] == "master[master01].init"


def test_failed_join_leftovers_are_reset_and_joined_again(lab: Cluster) -> None:
    s = Synthetic(lab).converged()
    s.nodes = [n for n in s.nodes if n.name not in ("master03", "worker02")]
    plan = plan_of(lab, s)
    assert ids(plan) == ["cluster.bootstrap-token", "cluster.certificate-key",
                         "master[master03].join", "worker[worker02].join", "cluster.verify"]
    steps = {st.id: st for st in plan.steps()}
    assert steps["master[master03].join"].title == "Reset and re-join control-plane node master03"
    assert steps["master[master03].join"].reset_first  # type: ignore[attr-defined]
    assert steps["worker[worker02].join"].reset_first  # type: ignore[attr-defined]
    assert plan.diff.get("master[master03]").op.value == "replace"  # type: ignore[union-attr]
    assert plan.counts() == (3, 1, 2)


def test_stacked_joins_say_they_wait_for_etcd(lab: Cluster) -> None:
    stacked = load_file(str(SPECS / "stacked.yaml")).cluster
    plan = plan_of(stacked, Synthetic(stacked).lb().init())
    join = next(st for st in plan.steps() if st.id == "master[master02].join")
    assert "wait until the stacked etcd is healthy and settled" in join.commands()


def test_growing_etcd_from_three_to_five_adds_one_member_at_a_time() -> None:
    five = load_file(str(SPECS / "five-etcd.yaml")).cluster
    names = [h.name for h in five.etcd_members]
    s = Synthetic(five, etcd_version="3.5.15").etcd(names[:3]).lb()
    s.join(*[h.name for h in five.masters], *[h.name for h in five.workers])
    plan = plan_of(five, s)
    a, b = names[3], names[4]
    chain = [f"etcd.member[{a}].add", f"etcd.member[{a}].start", f"etcd.member[{a}].promote",
             f"etcd.member[{b}].add", f"etcd.member[{b}].start", f"etcd.member[{b}].promote",
             "etcd.health"]
    assert [i for i in ids(plan) if i.startswith("etcd.")] == chain
    assert set(itertools.pairwise(chain)) <= edges(plan)


def test_all_members_down_with_their_data_are_started_together(lab: Cluster) -> None:
    s = Synthetic(lab).converged()
    for name in ("etcd01", "etcd02", "etcd03"):
        s.etcd_facts(name, active=False, members=None, status=None, health=None)
    plan = plan_of(lab, s)
    starts = [f"etcd.member[{m}].start" for m in ("etcd01", "etcd02", "etcd03")]
    assert ids(plan) == [*starts, "etcd.health", "cluster.verify"]
    assert edges(plan) == {*((st, "etcd.health") for st in starts), ("etcd.health", "cluster.verify")}


UNREADABLE = "x509: certificate signed by unknown authority"


def test_bootstrap_over_a_running_etcd_it_cannot_read_is_refused(lab: Cluster) -> None:
    # an etcd cluster built by hand (Debian's unit, its own client certificates): hactl's
    # etcdctl cannot read it, so the members look like "no cluster yet"
    s = Synthetic(lab).lb()
    for name in ("etcd01", "etcd02", "etcd03"):
        s.etcd_facts(name, active=True, enabled=True, data_dir_state="nested",
                     nested_member="/var/lib/etcd/default/member", query_error=UNREADABLE)
    with pytest.raises(PlanError) as info:
        plan_of(lab, s)
    text = str(info.value)
    for name in ("etcd01", "etcd02", "etcd03"):
        assert (f"{name}: an etcd service is running but hactl cannot read it ({UNREADABLE}); "
                "hactl never starts a new member over a running etcd") in text
    assert "/etc/etcd/pki/healthcheck-client.crt" in text and "systemctl disable --now etcd" in text
    assert "holds another etcd's member data" not in text  # one reason per host: the running etcd


def test_member_data_one_level_down_is_refused_not_emptied(lab: Cluster) -> None:
    s = Synthetic(lab)
    s.etcd_facts("etcd02", data_dir_state="nested", nested_member="/var/lib/etcd/default/member")
    with pytest.raises(PlanError) as info:
        plan_of(lab, s)
    assert str(info.value).endswith(
        "etcd02: the data dir /var/lib/etcd holds another etcd's member data "
        "(/var/lib/etcd/default/member); hactl never deletes etcd data: move it away by hand "
        "(e.g. mv /var/lib/etcd/default /var/lib/etcd/default.old) and plan again")
    # entries that are no member's data are moved aside by the bootstrap, and the plan says so
    s.etcd_facts("etcd02", data_dir_state="other", nested_member=None, data_dir_entries=2,
                 data_dir_names=("README", "lost+found"))
    plan = plan_of(lab, s)
    steps = {step.id: step for step in plan.steps()}
    aside = ("move the data dir's entries aside into <dataDir>.hactl-old-<UTC time> (nothing "
             "deleted; member data refused)")
    assert aside in steps["etcd.member[etcd02].bootstrap"].commands()
    assert aside not in steps["etcd.member[etcd01].bootstrap"].commands()
    assert steps["etcd.member[etcd02].bootstrap"].reason.endswith(
        "its data dir /var/lib/etcd holds 2 entries ('README', 'lost+found') but no member data: "
        "they will be moved aside into /var/lib/etcd.hactl-old-<UTC time> (nothing is deleted) "
        "and the member starts on the emptied directory")


def test_new_member_certificates_without_the_ca_key_are_refused(lab: Cluster) -> None:
    # an etcd built by hand keeps its CA key elsewhere: etcd03 (rebuilt) could get no certificates
    s = Synthetic(lab).etcd(["etcd01", "etcd02"]).lb()
    s.join(*[h.name for h in lab.masters], *[h.name for h in lab.workers])
    for name in ("etcd01", "etcd02"):
        s.etcd_facts(name, ca_key_present=False)
    with pytest.raises(PlanError) as info:
        plan_of(lab, s)
    assert str(info.value).endswith(
        "etcd03 needs etcd certificates from the etcd CA (/etc/etcd/pki/ca.crt on the members), but "
        "no member holds its key (/etc/etcd/pki/ca.key); hactl issues member certificates with it. "
        "For a cluster built by hand, copy that CA's key to /etc/etcd/pki/ca.key (mode 0600) on one "
        "member and plan again")
    # a member that did not answer may hold it: the plan goes on, the step looks again
    assert "pki.etcd[etcd03]" in ids(plan_of(lab, s.unreachable("etcd01")))
    # the key on one member is enough
    s = Synthetic(lab).etcd(["etcd01", "etcd02"]).lb()
    s.join(*[h.name for h in lab.masters], *[h.name for h in lab.workers])
    s.etcd_facts("etcd01", ca_key_present=False)
    assert "pki.etcd[etcd03]" in ids(plan_of(lab, s))
