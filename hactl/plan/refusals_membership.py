"""Refusals of day-2 membership changes: removing a node the spec no longer names (a departing
host, :mod:`hactl.facts.departing`) and replacing a re-imaged host (a stale Node or stacked
etcd member of a spec host that has none of kubeadm's files).

The plan refuses — naming the host, what it found and what to do — when a removal would:
- reach a machine that may be another spec host (its address is a spec host's address);
- leave a kubelet running that would register the Node again (a Ready Node whose host hactl
  cannot reach to reset it; a stale Node that is Ready while its spec host is re-imaged);
- take a control plane of two or more masters down to one;
- break stacked etcd's quorum, checked removal by removal (one at a time, in plan order) with
  the arithmetic shown; or remove a stacked member while kubeadm's member list is unknown.

Pure (facts in, messages out); wired into :func:`hactl.plan.refusals.check`. Each step checks
its own precondition again on fresh facts when it runs (the quorum, the Node's state).
"""

from __future__ import annotations

from collections.abc import Mapping

from hactl.diff import Diff, stacked_quorum
from hactl.facts.departing import departing
from hactl.facts.model import EtcdMember, Observed
from hactl.plan.refusals import removal_problem
from hactl.spec.models import Cluster
from hactl.vocabulary import Intent


def check(cluster: Cluster, observed: Observed, diff: Diff) -> list[str]:
    view = observed.views(cluster).api
    if view is None:
        return []
    problems: list[str] = []
    leaving = departing(cluster, view)
    for d in leaving:
        if d.clash:
            where = _spec_path(cluster, d.clash)
            problems.append(
                f"{d.name} is in the cluster but not in the spec, and its address {d.address} is "
                f"the address of the spec's {d.clash} ({where}): hactl will not reset a machine "
                f"that may be {d.clash} under another name (renaming a node, {where}.name, is not "
                f"supported). Put {d.name} back in the spec, or remove it by hand (`kubectl "
                f"delete node {d.name}`) if {d.clash} is a new machine")
            continue
        facts = observed.get(d.name)
        if d.node is not None and d.node.ready and (facts is None or not facts.reachable):
            why = (f"it does not answer at {d.address} ({facts.error if facts else 'not probed'})"
                   if d.address else "the cluster records no address for it")
            problems.append(
                f"{d.name} is a Ready Node of the cluster but not in the spec, and hactl cannot "
                f"reset it: {why}. Its kubelet would register the Node again after hactl deletes "
                "it. Make it reachable over SSH (with the spec's ssh settings), or power it off "
                f"(once its Node is NotReady hactl removes it without a reset), or put {d.name} "
                "back in the spec")
    cp_now = sum(1 for n in view.nodes if n.control_plane)
    cp_leaving = [d.name for d in leaving if d.control_plane and d.node is not None]
    if cp_leaving and cp_now >= 2 and len(cluster.masters) < 2:
        problems.append(
            f"removing {', '.join(cp_leaving)} would leave {len(cluster.masters)} master of "
            f"{cp_now}: hactl never takes a control plane of two or more masters down to one "
            "(one master is a single point of failure, and with stacked etcd 2 → 1 members "
            "passes through a quorum of 2). Keep at least 2 masters (3 for high availability)")
    for c in diff.effective():
        if Intent.DELETE_NODE in c.intents and Intent.JOIN in c.intents and c.detail.node_ready:
            problems.append(
                f"{c.host} has none of kubeadm's files (re-imaged?) but its Node is Ready: another "
                f"machine may be running as {c.host}. hactl deletes a stale Node only when it is "
                f"NotReady; stop the kubelet that serves {c.host} (or wait until the Node is "
                "NotReady) and plan again")
    problems += _stacked_quorum(cluster, observed, diff)
    return problems


def _stacked_quorum(cluster: Cluster, observed: Observed, diff: Diff) -> list[str]:
    """Every stacked member this plan removes, one at a time in plan order (stale members of
    re-imaged masters first, then the departing ones): each removal must leave a quorum."""
    if cluster.etcd.topology != "stacked":
        return []
    view = observed.views(cluster).api
    assert view is not None
    removing = [c for c in diff.effective() if Intent.REMOVE_STACKED in c.intents]
    if view.stacked_members is None:
        # unknown list: every control-plane Node that leaves may hold a member
        names = ", ".join(sorted({*(c.host or "?" for c in removing),
                                  *(d.name for d in departing(cluster, view) if d.control_plane)}))
        if not names:
            return []
        return [f"removing the stacked etcd member of {names} needs kubeadm's etcd member list "
                f"(for the quorum arithmetic), which could not be read: {view.stacked_error}. "
                "Make the masters' etcd answer and plan again"]
    members = list(view.stacked_members)
    health = view.stacked_health or {}
    ordered = sorted(removing, key=lambda c: Intent.JOIN not in c.intents)
    problems = []
    for c in ordered:
        target = next((m for m in members if m.id == c.detail.member_id), None)
        if target is None:
            continue
        voters = [m for m in members if not m.is_learner]
        healthy = [m for m in voters if _healthy(m, health)]
        problem = removal_problem(target.name or target.id, len(voters), len(healthy),
                                  removing_healthy=_healthy(target, health),
                                  removing_voter=not target.is_learner)
        if problem:
            problems.append(f"{problem} {stacked_quorum(view, [target])}")
            break
        members.remove(target)
    return problems


def _healthy(member: EtcdMember, health: Mapping[str, bool]) -> bool:
    return any(health.get(u) for u in member.client_urls)


def _spec_path(cluster: Cluster, name: str) -> str:
    """Where host ``name`` is in the spec, as the spec writes it (``masters[0]``)."""
    for path, hosts in (("masters", cluster.masters), ("workers", cluster.workers),
                        ("etcd.members", cluster.etcd.members),
                        ("loadBalancer.hosts", cluster.load_balancer.hosts)):
        for index, host in enumerate(hosts):
            if host.name == name:
                return f"{path}[{index}]"
    return name
