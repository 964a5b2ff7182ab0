"""Issue 13: day-2 membership in the plan — a node taken out of the spec (a departing host) is
drained, reset and deleted; a re-imaged host's stale Node and stacked etcd member go before it
joins again; orphans are removed; what would break quorum or leave a kubelet behind is refused.
On synthetic facts of converged clusters (the lab tests run the same on real hosts)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import networkx as nx
import pytest

from hactl.diff import diff
from hactl.errors import PlanError
from hactl.facts.departing import departing
from hactl.facts.model import EtcdMember, HostFacts, KubernetesFacts, NodeInfo
from hactl.plan.planner import Plan, build_plan
from hactl.plan.synthetic import PROBED_AT, Synthetic, member_id, stacked_member
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.vocabulary import Intent

SPECS = Path(__file__).resolve().parents[2] / "specs"


@pytest.fixture(scope="module")
def lab() -> Cluster:
    return load_file(str(SPECS / "lab.yaml")).cluster


@pytest.fixture(scope="module")
def stacked5() -> Cluster:
    """specs/stacked.yaml grown to 5 masters."""
    return edit(load_file(str(SPECS / "stacked.yaml")).cluster, lambda d: d["masters"].extend(
        [{"name": "master04", "address": "198.18.2.14"}, {"name": "master05", "address": "198.18.2.15"}]))


def edit(cluster: Cluster, change: Any) -> Cluster:
    doc = cluster.model_dump(mode="json", by_alias=True, exclude_none=True)
    change(doc)
    return Cluster.model_validate(doc)


def without(cluster: Cluster, role: str, *names: str) -> Cluster:
    return edit(cluster, lambda d: d.update({role: [h for h in d[role] if h["name"] not in names]}))


def plan(cluster: Cluster, synthetic: Synthetic) -> Plan:
    return build_plan(cluster, synthetic.observed(), now=PROBED_AT)


def refusal(cluster: Cluster, synthetic: Synthetic) -> str:
    with pytest.raises(PlanError) as caught:
        plan(cluster, synthetic)
    return " ".join(str(caught.value).split())


def order(p: Plan) -> list[str]:
    return [s.id for s in p.steps()]


def path(p: Plan, before: str, after: str) -> bool:
    return bool(nx.has_path(p.graph.g, before, after))


def test_a_worker_taken_out_of_the_spec_is_drained_reset_and_deleted(lab: Cluster) -> None:
    p = plan(without(lab, "workers", "worker02"), Synthetic(lab).converged())
    assert p.counts() == (0, 0, 1)
    steps = {s.id: s for s in p.steps()}
    assert order(p) == ["worker[worker02].drain", "worker[worker02].reset",
                        "worker[worker02].delete-node", "cluster.verify"]
    drain = steps["worker[worker02].drain"]
    assert drain.host == "master01" and drain.node == "worker02"  # type: ignore[attr-defined]
    assert drain.drain_timeout == 300.0  # type: ignore[attr-defined]
    assert steps["worker[worker02].reset"].host == "worker02"
    assert steps["worker[worker02].delete-node"].host == "master01"
    change = p.diff.get("worker[worker02]")
    assert change is not None and change.intents == {Intent.DRAIN, Intent.RESET, Intent.DELETE_NODE}
    assert "kubeadm reset -f on it (at 198.18.0.32)" in change.reason


def test_workers_leave_in_parallel_and_the_drain_timeout_comes_from_the_spec(lab: Cluster) -> None:
    spec = edit(without(lab, "workers", "worker01", "worker02"),
                lambda d: d.update(apply={"drainTimeout": 42}))
    p = plan(spec, Synthetic(lab).converged())
    assert not path(p, "worker[worker01].delete-node", "worker[worker02].drain")
    assert not path(p, "worker[worker02].delete-node", "worker[worker01].drain")
    drain = p.graph.step("worker[worker01].drain")
    assert drain.drain_timeout == 42.0 and drain.timeout == 102.0  # type: ignore[attr-defined]


def test_a_master_leaves_the_load_balancers_before_it_is_drained(lab: Cluster) -> None:
    """External etcd: the backend goes first (graceful reload), then drain, reset, Node."""
    p = plan(without(lab, "masters", "master03"), Synthetic(lab).converged())
    assert order(p) == ["lb[lb01].haproxy", "master[master03].drain", "master[master03].reset",
                        "master[master03].delete-node", "cluster.verify"]
    reset = p.graph.step("master[master03].reset")
    assert reset.control_plane and not reset.skip_etcd_member  # type: ignore[attr-defined]
    assert reset.external_etcd  # type: ignore[attr-defined]
    assert "kubeadm reset -f --skip-phases=remove-etcd-member" in reset.commands()[1]
    worker = plan(without(lab, "workers", "worker02"), Synthetic(lab).converged())
    assert "--skip-phases" not in worker.graph.step("worker[worker02].reset").commands()[1]


def test_stacked_5_to_3_removes_the_first_master_one_at_a_time_with_the_arithmetic(
        stacked5: Cluster) -> None:
    p = plan(without(stacked5, "masters", "master01", "master02"), Synthetic(stacked5).converged())
    assert order(p) == [
        "lb[lb01].haproxy",
        "master[master01].drain", "master[master01].remove-member", "master[master01].reset",
        "master[master01].delete-node",
        "master[master02].drain", "master[master02].remove-member", "master[master02].reset",
        "master[master02].delete-node", "cluster.verify"]
    remove = p.graph.step("master[master01].remove-member")
    assert remove.host == "master03" and remove.member_id == member_id("master01")  # type: ignore[attr-defined]
    assert remove.peer_url == "https://198.18.2.11:2380"  # type: ignore[attr-defined]
    assert p.graph.step("master[master01].reset").skip_etcd_member  # type: ignore[attr-defined]
    one = p.diff.get("master[master01]")
    two = p.diff.get("master[master02]")
    assert one is not None and two is not None
    assert ("(5 voting members, 5 healthy; without master01: 4 members need ⌊4/2⌋+1 = 3 healthy, "
            "4 are)") in one.reason
    assert ("(5 voting members, 5 healthy; without master01, master02: 3 members need "
            "⌊3/2⌋+1 = 2 healthy, 3 are)") in two.reason


def test_a_stacked_removal_that_breaks_quorum_is_refused_with_the_arithmetic(stacked5: Cluster) -> None:
    synthetic = Synthetic(stacked5).converged()
    synthetic.stacked_down = {"master03", "master04"}
    message = refusal(without(stacked5, "masters", "master01", "master02"), synthetic)
    assert "refusing to remove etcd member master01" in message
    assert "5 voting members, 3 healthy" in message


def test_a_stacked_removal_without_the_member_list_is_refused(stacked5: Cluster) -> None:
    synthetic = Synthetic(stacked5).converged()
    observed = synthetic.observed()
    hosts = dict(observed.hosts)
    for name, facts in hosts.items():
        k8s = facts.kubernetes
        if k8s is not None and k8s.cluster is not None:
            hosts[name] = replace(facts, kubernetes=replace(k8s, cluster=replace(
                k8s.cluster, stacked_members=None, stacked_health=None,
                stacked_error="context deadline exceeded")))
    with pytest.raises(PlanError) as caught:
        build_plan(without(stacked5, "masters", "master05"), replace(observed, hosts=hosts),
                   now=PROBED_AT)
    assert "needs kubeadm's etcd member list" in str(caught.value)
    assert "context deadline exceeded" in str(caught.value)


def test_two_masters_are_never_taken_down_to_one(lab: Cluster) -> None:
    two = without(lab, "masters", "master03")
    synthetic = Synthetic(two).converged()
    message = refusal(without(two, "masters", "master02"), synthetic)
    assert "would leave 1 master of 2" in message
    assert "never takes a control plane of two or more masters down to one" in message


def test_a_ready_node_hactl_cannot_reach_is_refused(lab: Cluster) -> None:
    """Joined by hand, or its host does not answer: its kubelet would register it again."""
    synthetic = Synthetic(lab).converged()
    synthetic.nodes.append(NodeInfo("stray01", True, {}, "v1.30.4", internal_ips=("198.18.0.99",)))
    message = refusal(lab, synthetic)
    assert "stray01 is a Ready Node of the cluster but not in the spec, and hactl cannot reset it" in message
    assert "power it off" in message


def test_a_notready_node_nobody_reaches_is_deleted_without_a_reset(lab: Cluster) -> None:
    synthetic = Synthetic(lab).converged()
    synthetic.nodes.append(NodeInfo("stray01", False, {}, "v1.30.4", internal_ips=("198.18.0.99",)))
    observed = synthetic.observed()
    hosts = {**observed.hosts, "stray01": HostFacts("stray01", "198.18.0.99", False, "connection refused")}
    p = build_plan(lab, replace(observed, hosts=hosts), now=PROBED_AT)
    assert order(p) == ["worker[stray01].delete-node", "cluster.verify"]
    change = p.diff.get("worker[stray01]")
    assert change is not None
    assert "it does not answer at 198.18.0.99 (connection refused), so it is not reset" in change.reason


def test_a_departing_host_at_a_spec_hosts_address_is_refused(lab: Cluster) -> None:
    renamed = edit(lab, lambda d: d["workers"][0].update(name="worker09"))
    message = refusal(renamed, Synthetic(lab).converged())
    assert "worker01 is in the cluster but not in the spec, and its address 198.18.0.31" in message
    assert "workers[0].name" in message


def fresh(synthetic: Synthetic, name: str) -> Synthetic:
    """``name``'s host re-imaged: none of kubeadm's files, kubelet stopped."""
    return synthetic._set(name, kubernetes=KubernetesFacts(False, False, (), (), False, {}))


def test_a_reimaged_stacked_master_is_replaced_member_and_node_first(stacked5: Cluster) -> None:
    synthetic = fresh(Synthetic(stacked5).converged(), "master01")
    synthetic.nodes = [replace(n, ready=False) if n.name == "master01" else n for n in synthetic.nodes]
    synthetic.stacked_down = {"master01"}
    p = plan(stacked5, synthetic)
    steps = order(p)
    assert steps.index("master[master01].remove-member") < steps.index("master[master01].delete-node") \
        < steps.index("master[master01].join")
    remove = p.graph.step("master[master01].remove-member")
    assert remove.host == "master02"  # through another master, never the re-imaged one
    change = p.diff.get("master[master01]")
    assert change is not None and change.intents == {Intent.JOIN, Intent.DELETE_NODE, Intent.REMOVE_STACKED}
    assert "has none of kubeadm's files (re-imaged?)" in change.reason
    assert "(5 voting members, 4 healthy; without master01: 4 members need ⌊4/2⌋+1 = 3 healthy, 4 are)" \
        in change.reason


def test_a_reimaged_master_whose_node_is_still_ready_is_refused(stacked5: Cluster) -> None:
    synthetic = fresh(Synthetic(stacked5).converged(), "master02")
    message = refusal(stacked5, synthetic)
    assert "master02 has none of kubeadm's files (re-imaged?) but its Node is Ready" in message


def test_a_reimaged_worker_loses_its_stale_node_before_it_joins(lab: Cluster) -> None:
    synthetic = fresh(Synthetic(lab).converged(), "worker01")
    synthetic.nodes = [replace(n, ready=False) if n.name == "worker01" else n for n in synthetic.nodes]
    p = plan(lab, synthetic)
    assert path(p, "worker[worker01].delete-node", "worker[worker01].join")


def test_an_unstarted_orphan_member_is_removed_through_a_master(stacked5: Cluster) -> None:
    synthetic = Synthetic(stacked5).converged()
    members = [stacked_member(h.name, str(h.address)) for h in stacked5.masters]
    orphan = EtcdMember("1234abcd", "", ("https://198.18.2.77:2380",), ())
    synthetic.stacked_members = [*members, orphan]
    p = plan(stacked5, synthetic)
    assert "master[1234abcd].remove-member" in order(p)
    assert "master[1234abcd].delete-node" not in order(p)
    assert [d.name for d in departing(stacked5, synthetic.observed().views(stacked5).api)] == ["1234abcd"]


def test_a_member_added_by_an_interrupted_join_belongs_to_its_master(stacked5: Cluster) -> None:
    """An unstarted member at a spec master's peer URL is that master's (its join stopped), not
    an orphan: the master's own join path handles it."""
    spec = edit(stacked5, lambda d: d["masters"].append({"name": "master06", "address": "198.18.2.16"}))
    synthetic = Synthetic(stacked5).converged()
    members = [stacked_member(h.name, str(h.address)) for h in stacked5.masters]
    synthetic.stacked_members = [*members, EtcdMember("99", "", ("https://198.18.2.16:2380",), ())]
    api = synthetic.observed().views(spec).api
    assert departing(spec, api) == ()


def test_a_converged_cluster_plans_no_membership_change(lab: Cluster, stacked5: Cluster) -> None:
    for spec in (lab, stacked5):
        changes = diff(spec, Synthetic(spec).converged().observed(), now=PROBED_AT).effective()
        assert changes == ()


def test_a_saved_plan_that_resets_a_departing_host_loads(lab: Cluster, tmp_path: Path) -> None:
    """The saved plan's steps may act on a host the plan removes (not in the spec); any other
    host outside the spec is still refused when the plan is read."""
    from hactl.plan import planfile

    p = plan(without(lab, "workers", "worker02"), Synthetic(lab).converged())
    path = tmp_path / "remove.plan"
    planfile.save(p, str(path))
    loaded = planfile.load(str(path))
    assert [s.id for s in loaded.steps()] == order(p)
    assert loaded.graph.step("worker[worker02].reset").host == "worker02"


def test_removal_plans_validate_against_the_plan_schema(lab: Cluster, stacked5: Cluster) -> None:
    import json

    import jsonschema

    from hactl.plan import planfile
    from hactl.plan.output import plan_data

    schema = json.loads((SPECS.parent / "docs" / "plan-format.schema.json").read_text())
    for p in (plan(without(lab, "workers", "worker02"), Synthetic(lab).converged()),
              plan(without(stacked5, "masters", "master01", "master02"), Synthetic(stacked5).converged())):
        jsonschema.validate(plan_data(p), schema)
        jsonschema.validate(json.loads(planfile.dumps(p)), schema)
