"""The removal step kinds (issue 13) against hactl's FakeTransport: DrainNode, ResetNode,
DeleteNode and RemoveStackedMember — their exact commands, idempotence, the drain blocked by a
PodDisruptionBudget (kubectl's own output), and the stacked etcd's quorum refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from stepctx import Ctx

from hactl import hostlayout
from hactl.errors import CommandError, PlanError
from hactl.plan import commands as cmd
from hactl.plan import remote
from hactl.plan.step import Step
from hactl.plan.steps import DeleteNode, DrainNode, RemoveStackedMember, ResetNode
from hactl.plan.steps import delete_node as delete_node_module
from hactl.plan.steps.drain_node import drain_blockers
from hactl.spec.load import load_file
from hactl.transport import tools
from hactl.transport.base import Result
from hactl.transport.fake import Call

ROOT = Path(__file__).resolve().parents[2]
LAB = load_file(str(ROOT / "specs" / "lab.yaml")).cluster
STACKED = load_file(str(ROOT / "specs" / "stacked.yaml")).cluster
NOT_FOUND = 'Error from server (NotFound): nodes "{}" not found'


@pytest.fixture(autouse=True)
def _fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_sleep(_seconds: float) -> None:
        return None

    monkeypatch.setattr(remote.asyncio, "sleep", no_sleep)


def make(cls: type[Step], host: str, **kw: Any) -> Any:
    return cls(id=f"{cls.kind}[{host}]", host=host, title="t", reason="r", **kw)


def node_json(name: str, *, unschedulable: bool = False) -> str:
    return json.dumps({"metadata": {"name": name}, "spec": {"unschedulable": True} if unschedulable else {}})


# -- kubectl's own output for a drain that a PodDisruptionBudget blocks ---------------------------
# Captured verbatim from the real kubectl here (v1.32.4: `kubectl drain worker01 --ignore-daemonsets
# --delete-emptydir-data --timeout=…`) against a minimal API that answers each eviction with the
# API server's 429 "Cannot evict pod as it would violate the pod's disruption budget."; the lines
# are kubectl's own (k8s.io/kubectl/pkg/drain/drain.go evictPods, pkg/cmd/drain/drain.go RunDrain
# and deleteOrEvictPodsSimple, filters.go PodDeleteList.errors).

PDB_STDOUT = """node/worker01 already cordoned
evicting pod shop/web-6d4cf56db6-x2x7k
evicting pod shop/web-6d4cf56db6-x2x7k
evicting pod shop/web-6d4cf56db6-x2x7k
evicting pod shop/web-6d4cf56db6-x2x7k
"""
PDB_STDERR = """Warning: ignoring DaemonSet-managed Pods: kube-system/kube-proxy-7xjpl
error when evicting pods/"web-6d4cf56db6-x2x7k" -n "shop" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget.
error when evicting pods/"web-6d4cf56db6-x2x7k" -n "shop" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget.
error when evicting pods/"web-6d4cf56db6-x2x7k" -n "shop" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget.
There are pending pods in node "worker01" when an error occurred: error when evicting pods/"web-6d4cf56db6-x2x7k" -n "shop": global timeout reached: 12s
pod/web-6d4cf56db6-x2x7k
error: unable to drain node "worker01" due to error: error when evicting pods/"web-6d4cf56db6-x2x7k" -n "shop": global timeout reached: 12s, continuing command...
There are pending nodes to be drained:
 worker01
error when evicting pods/"web-6d4cf56db6-x2x7k" -n "shop": global timeout reached: 12s
"""
UNMANAGED_STDOUT = """node/worker01 already cordoned
"""
UNMANAGED_STDERR = """error: unable to drain node "worker01" due to error: cannot delete cannot delete Pods that declare no controller (use --force to override): default/solo, continuing command...
There are pending nodes to be drained:
 worker01
cannot delete cannot delete Pods that declare no controller (use --force to override): default/solo
"""
TWO_PODS_STDOUT = """node/worker01 already cordoned
evicting pod shop/web-1
evicting pod data/db-0
evicting pod shop/web-1
evicting pod data/db-0
evicting pod shop/web-1
evicting pod data/db-0
"""
TWO_PODS_STDERR = """error when evicting pods/"db-0" -n "data" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget.
error when evicting pods/"web-1" -n "shop" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget.
error when evicting pods/"db-0" -n "data" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget.
error when evicting pods/"web-1" -n "shop" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget.
There are pending pods in node "worker01" when an error occurred: [error when evicting pods/"web-1" -n "shop": global timeout reached: 7s, error when evicting pods/"db-0" -n "data": global timeout reached: 7s]
pod/db-0
pod/web-1
error: unable to drain node "worker01" due to error: [error when evicting pods/"web-1" -n "shop": global timeout reached: 7s, error when evicting pods/"db-0" -n "data": global timeout reached: 7s], continuing command...
There are pending nodes to be drained:
 worker01
error when evicting pods/"web-1" -n "shop": global timeout reached: 7s
error when evicting pods/"db-0" -n "data": global timeout reached: 7s
"""
TERMINATING = ('There are pending pods in node "worker01" when an error occurred: error when waiting for pod '
               '"api-2" in namespace "shop" to terminate: global timeout reached: 2m0s\n')
"""kubectl's line for a pod that was evicted but had not terminated when the drain's time ran out
(drain.go: evictPods → waitForDelete)."""


WEB_POD = {"metadata": {"name": "web-6d4cf56db6-x2x7k", "namespace": "shop",
                       "labels": {"app": "web", "pod-template-hash": "6d4cf56db6"}}}
WEB_BUDGETS = {"apiVersion": "v1", "kind": "List", "items": [
    {"metadata": {"name": "web", "namespace": "shop"},
     "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}},
     "status": {"currentHealthy": 2, "desiredHealthy": 2, "disruptionsAllowed": 0, "expectedPods": 2}},
    {"metadata": {"name": "db", "namespace": "shop"},
     "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "db"}}},
     "status": {"currentHealthy": 3, "disruptionsAllowed": 1}}]}


def drain_world(ctx: Ctx, *, drain: Result, node: str = "worker01", via: str = "master01",
                pods: dict[str, Any] | None = None, budgets: dict[str, Any] | None = None) -> None:
    """master01 answers for Node ``node``: registered, cordoned by ``cordon``, ``drain`` as given;
    ``pods`` (name → Pod) and ``budgets`` (namespace → PodDisruptionBudgetList) for the reads
    after a blocked drain."""
    fake = ctx.transport(via)
    state = {"cordoned": False}

    def get(_call: Call) -> Result:
        return Result(0, node_json(node, unschedulable=state["cordoned"]), "")

    def cordon(_call: Call) -> Result:
        state["cordoned"] = True
        return Result(0, f"node/{node} cordoned\n", "")

    fake.on(lambda w: " get node " in w, respond=get)
    fake.on(lambda w: " cordon " in w, respond=cordon)
    fake.on(lambda w: " drain " in w, respond=lambda _c: drain)

    def pod(call: Call) -> Result:
        found = (pods or {}).get(call.argv[call.argv.index("pod") + 1])
        return Result(0, json.dumps(found), "") if found else Result(1, "", "Error from server (NotFound)")

    def pdbs(call: Call) -> Result:
        found = (budgets or {}).get(call.argv[call.argv.index("-n") + 1], {"items": []})
        return Result(0, json.dumps(found), "")

    fake.on(lambda w: " get pod " in w, respond=pod)
    fake.on(lambda w: " get poddisruptionbudgets " in w, respond=pdbs)


# -- DrainNode ----------------------------------------------------------------------------------


async def test_drain_cordons_then_drains_through_the_eviction_api() -> None:
    ctx = Ctx(LAB)
    drain_world(ctx, drain=Result(0, "node/worker01 already cordoned\nnode/worker01 drained\n", ""))
    step = make(DrainNode, "master01", node="worker01")
    await step.run(ctx)
    argvs = ctx.argvs("master01")
    assert argvs == [cmd.get_node("worker01"), cmd.kubectl("cordon", "worker01"),
                     cmd.kubectl("drain", "worker01", "--ignore-daemonsets", "--delete-emptydir-data",
                                 "--timeout=300s"),
                     cmd.get_node("worker01")]
    assert argvs[2][:2] == ("kubectl", "--kubeconfig") and argvs[2] == tools.kubectl(*argvs[2][5:])
    assert not any(a in ("--force", "--disable-eviction") for argv in argvs for a in argv)
    drain_call = ctx.transport("master01").calls[2]
    assert drain_call.timeout == 330.0
    assert step.timeout == 360.0
    assert ("Node drained", {"node": "worker01"}) in ctx.events


def test_the_step_timeout_follows_the_drain_timeout_also_through_a_saved_plan() -> None:
    step = make(DrainNode, "master01", node="worker01", drain_timeout=45)
    assert step.timeout == 105.0
    again = Step.from_data(json.loads(json.dumps(step.to_data())))
    assert again == step and isinstance(again, DrainNode) and again.drain_timeout == 45.0
    assert "--timeout=45s" in step.commands()[2]
    assert "--timeout=12.5s" in " ".join(cmd.drain("w", 12.5))


async def test_drain_of_a_node_already_gone_does_nothing() -> None:
    ctx = Ctx(LAB)
    ctx.transport("master01").on(lambda w: " get node " in w, exit_status=1, stderr=NOT_FOUND.format("worker01"))
    await make(DrainNode, "master01", node="worker01").run(ctx)
    assert ctx.argvs("master01") == [cmd.get_node("worker01")]
    assert ctx.events == [("Node already gone", {"node": "worker01"})]


async def test_drain_is_not_started_when_the_api_cannot_say_whether_the_node_exists() -> None:
    ctx = Ctx(LAB)
    ctx.transport("master01").on(
        lambda w: " get node " in w, exit_status=1,
        stderr="The connection to the server 198.18.0.5:6443 was refused - did you specify the right host or port?")
    with pytest.raises(CommandError, match="connection to the server") as err:
        await make(DrainNode, "master01", node="worker01").run(ctx)
    assert err.value.transient
    assert ctx.argvs("master01") == [cmd.get_node("worker01")]


async def test_a_drain_a_disruption_budget_blocks_names_the_pod_and_what_to_do() -> None:
    ctx = Ctx(LAB)
    drain_world(ctx, drain=Result(1, PDB_STDOUT, PDB_STDERR), pods={"web-6d4cf56db6-x2x7k": WEB_POD},
                budgets={"shop": WEB_BUDGETS})
    with pytest.raises(PlanError) as err:
        await make(DrainNode, "master01", node="worker01", drain_timeout=12).run(ctx)
    assert "--timeout=12s" in ctx.argvs("master01")[2]
    text = str(err.value)
    assert "the drain of Node worker01 did not finish within 12s; these pods blocked it:" in text
    assert ("  - shop/web-6d4cf56db6-x2x7k: Cannot evict pod as it would violate the pod's "
            "disruption budget. (PodDisruptionBudget shop/web (minAvailable: 2; 2 healthy, 0 "
            "disruptions allowed))\n") in text
    assert "shop/db" not in text  # its selector does not select the pod
    assert ctx.argvs("master01")[3:] == [cmd.get_pod("shop", "web-6d4cf56db6-x2x7k"), cmd.get_budgets("shop")]
    assert "kube-proxy" not in text  # a DaemonSet's pod: left alone, no blocker
    assert "Node worker01 stays cordoned" in text
    hint = err.value.hint or ""
    assert "PodDisruptionBudget" in hint and "scale the workload" in hint
    assert ("kubectl drain worker01 --ignore-daemonsets --delete-emptydir-data --disable-eviction"
            in hint)
    assert "apply.drainTimeout" in hint and "now 12)" in hint
    assert "hactl apply" in hint
    # nothing changed after the failed drain: no uncordon
    assert [a for a in ctx.argvs("master01") if "uncordon" in a] == []


async def test_a_blocked_drain_names_the_pods_also_when_the_budgets_cannot_be_read() -> None:
    ctx = Ctx(LAB)
    drain_world(ctx, drain=Result(1, TWO_PODS_STDOUT, TWO_PODS_STDERR))  # no pod answers
    with pytest.raises(PlanError) as err:
        await make(DrainNode, "master01", node="worker01", drain_timeout=7).run(ctx)
    text = str(err.value)
    assert ("  - data/db-0: Cannot evict pod as it would violate the pod's disruption budget.\n"
            "  - shop/web-1: Cannot evict pod as it would violate the pod's disruption budget.\n") in text
    assert "PodDisruptionBudget data/" not in text


def test_a_budget_selects_pods_as_a_label_selector_does() -> None:
    from hactl.plan.steps.drain_node import _selects

    labels = {"app": "web", "tier": "front"}
    assert _selects({}, labels)  # policy/v1: an empty selector selects every pod in the namespace
    assert not _selects(None, labels)
    assert _selects({"matchLabels": {"app": "web"}}, labels)
    assert not _selects({"matchLabels": {"app": "db"}}, labels)
    assert _selects({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "x"]}]}, labels)
    assert not _selects({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}, labels)
    assert _selects({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}, labels)
    assert not _selects({"matchLabels": {"app": "web"},
                         "matchExpressions": [{"key": "zone", "operator": "Exists"}]}, labels)


async def test_a_pod_nothing_manages_blocks_the_drain_at_once() -> None:
    ctx = Ctx(LAB)
    drain_world(ctx, drain=Result(1, UNMANAGED_STDOUT, UNMANAGED_STDERR))
    with pytest.raises(PlanError) as err:
        await make(DrainNode, "master01", node="worker01").run(ctx)
    text = str(err.value)
    assert text.startswith("master01: [drain_node[master01]] the drain of Node worker01 was refused;")
    assert ("  - default/solo: cannot delete Pods that declare no controller (use --force to "
            "override)") in text
    assert "stays cordoned" in text
    hint = err.value.hint or ""
    assert "`--force`" in hint and "apply.drainTimeout" not in hint


async def test_pods_that_never_terminate_point_at_a_dead_kubelet() -> None:
    ctx = Ctx(LAB)
    drain_world(ctx, drain=Result(1, "node/worker01 already cordoned\nevicting pod shop/api-2\n", TERMINATING))
    with pytest.raises(PlanError) as err:
        await make(DrainNode, "master01", node="worker01", drain_timeout=120).run(ctx)
    assert "  - shop/api-2: evicted, but still terminating when the drain ended" in str(err.value)
    hint = err.value.hint or ""
    assert "is the kubelet of worker01 down" in hint and "--skip-wait-for-delete-timeout=60" in hint
    assert "now 120)" in hint


def test_drain_blockers_reads_every_pod_kubectl_names() -> None:
    assert drain_blockers(TWO_PODS_STDOUT + TWO_PODS_STDERR) == {
        "data/db-0": "Cannot evict pod as it would violate the pod's disruption budget.",
        "shop/web-1": "Cannot evict pod as it would violate the pod's disruption budget.",
    }
    assert drain_blockers(TERMINATING) == {
        "shop/api-2": "evicted, but still terminating when the drain ended (global timeout reached: 2m0s)"}
    assert drain_blockers(UNMANAGED_STDOUT + UNMANAGED_STDERR) == {
        "default/solo": "cannot delete Pods that declare no controller (use --force to override)"}
    assert drain_blockers(PDB_STDOUT + PDB_STDERR) == {
        "shop/web-6d4cf56db6-x2x7k": "Cannot evict pod as it would violate the pod's disruption budget."}
    webhook = ('error when evicting pods/"kafka-1" -n "mq": admission webhook "drain.example.io" denied '
               "the request: rolled by its operator\n")
    assert drain_blockers(webhook) == {
        "mq/kafka-1": 'admission webhook "drain.example.io" denied the request: rolled by its operator'}
    assert drain_blockers("node/worker01 drained\n") == {}


async def test_a_drain_that_fails_for_another_reason_is_retried() -> None:
    ctx = Ctx(LAB)
    drain_world(ctx, drain=Result(1, "", "error: unable to upgrade connection: Unauthorized\n"))
    with pytest.raises(CommandError, match="Unauthorized") as err:
        await make(DrainNode, "master01", node="worker01").run(ctx)
    assert err.value.transient and "stays cordoned" in str(err.value)


async def test_a_drained_node_that_is_not_cordoned_fails_the_postcondition() -> None:
    ctx = Ctx(LAB)
    fake = ctx.transport("master01")
    fake.on(lambda w: " get node " in w, stdout=node_json("worker01"))  # never unschedulable
    fake.on(lambda w: " cordon " in w, stdout="node/worker01 cordoned\n")
    fake.on(lambda w: " drain " in w, stdout="node/worker01 drained\n")
    with pytest.raises(CommandError, match="not cordoned"):
        await make(DrainNode, "master01", node="worker01").run(ctx)


# -- ResetNode ----------------------------------------------------------------------------------


def host_world(ctx: Ctx, host: str, files: set[str], *, kubelet_unit: bool = True,
               reset_leaves: set[str] | None = None, stays_enabled: bool = False,
               etcd_data: bool = False) -> dict[str, Any]:
    """A host holding ``files``; ``kubeadm reset`` removes them (but ``reset_leaves``); the
    kubelet runs and is enabled until ``systemctl disable --now kubelet``; ``etcd_data``: member
    data in /var/lib/etcd, which kubeadm reset clears unless its remove-etcd-member phase is
    skipped (kubeadm's phases/reset/removeetcdmember.go), and which moving aside empties."""
    fake = ctx.transport(host)
    state: dict[str, Any] = {"files": set(files), "kubelet": "on" if kubelet_unit else "none",
                             "etcd_data": etcd_data, "aside": []}

    def members(call: Call) -> Result:
        return Result(0, f"{call.argv[4]}/member\n" if state["etcd_data"] else "", "")

    def move_aside(call: Call) -> Result:
        state["etcd_data"] = False
        state["aside"].append(call.argv[5])
        return Result(0, f"moved aside into {call.argv[5]}\n", "")

    def leftovers(_call: Call) -> Result:
        return Result(0, "".join(f"{p}\n" for p in sorted(state["files"])), "")

    def reset(call: Call) -> Result:
        state["files"] = set(reset_leaves or ())
        if "--skip-phases=remove-etcd-member" not in call.argv:
            state["etcd_data"] = False
        state["kubelet"] = "stopped"
        return Result(0, "[reset] Stopping the kubelet service\n", "")

    def disable(_call: Call) -> Result:
        if not kubelet_unit:
            return Result(1, "", "Failed to disable unit: Unit file kubelet.service does not exist.\n")
        state["kubelet"] = "enabled-stopped" if stays_enabled else "off"
        return Result(0, "", "Removed \"/etc/systemd/system/multi-user.target.wants/kubelet.service\".\n")

    def is_active(_call: Call) -> Result:  # a unit that does not exist is "inactive" too
        return Result(0, "active\n", "") if state["kubelet"] == "on" else Result(3, "inactive\n", "")

    def is_enabled(_call: Call) -> Result:
        if not kubelet_unit:
            return Result(1, "", "Failed to get unit file state for kubelet.service: No such file or directory\n")
        return Result(1, "disabled\n", "") if state["kubelet"] == "off" else Result(0, "enabled\n", "")

    fake.on(lambda w: w.startswith("sh -c ") and '"$2"/*' in w, respond=leftovers)
    fake.on(lambda w: w.startswith("sh -c ") and "/member" in w, respond=members)
    fake.on(lambda w: w.startswith("sh -c ") and "aside=$2" in w, respond=move_aside)
    fake.on(("kubeadm", "reset"), respond=reset)
    fake.on(("systemctl", "disable", "--now", "kubelet"), respond=disable)
    fake.on(("systemctl", "is-active", "kubelet"), respond=is_active)
    fake.on(("systemctl", "is-enabled", "kubelet"), respond=is_enabled)
    return state


async def test_reset_of_a_worker_resets_and_disables_the_kubelet() -> None:
    ctx = Ctx(LAB)
    host_world(ctx, "worker01", {hostlayout.KUBELET_CONF})
    step = make(ResetNode, "worker01", node="worker01", control_plane=False, skip_etcd_member=False)
    await step.run(ctx)
    assert ctx.argvs("worker01") == [
        cmd.kubernetes_leftovers(), ("kubeadm", "reset", "-f"), ("systemctl", "disable", "--now", "kubelet"),
        cmd.kubernetes_leftovers(), ("systemctl", "is-active", "kubelet"), ("systemctl", "is-enabled", "kubelet")]
    assert cmd.kubernetes_leftovers()[3:] == ("sh", hostlayout.KUBELET_CONF, hostlayout.K8S_MANIFESTS)
    assert ctx.transport("worker01").calls[1].timeout == 300.0
    assert step.action.value == "delete"


async def test_reset_of_a_stacked_master_skips_the_member_hactl_removed_and_moves_its_data_aside() -> None:
    ctx = Ctx(STACKED)
    state = host_world(ctx, "master03", {hostlayout.KUBELET_CONF, hostlayout.ETCD_MANIFEST,
                                         hostlayout.APISERVER_MANIFEST}, etcd_data=True)
    step = make(ResetNode, "master03", node="master03", control_plane=True, skip_etcd_member=True)
    await step.run(ctx)
    argvs = ctx.argvs("master03")
    assert ("kubeadm", "reset", "-f", "--skip-phases=remove-etcd-member") in argvs
    assert "--skip-phases=remove-etcd-member" in step.commands()[1]
    data_dir = STACKED.etcd.data_dir
    assert cmd.data_dir_members(data_dir) in argvs
    assert state["etcd_data"] is False and len(state["aside"]) == 1
    assert state["aside"][0].startswith(f"{data_dir}.hactl-old-")
    assert argvs.index(("systemctl", "disable", "--now", "kubelet")) < argvs.index(
        cmd.prepare_data_dir(data_dir, state["aside"][0]))
    plain = make(ResetNode, "master03", node="master03", control_plane=True, skip_etcd_member=False)
    assert "--skip-phases" not in " ".join(plain.commands())
    assert "hactl-old" not in " ".join(plain.commands())


async def test_a_retry_after_the_reset_still_moves_the_etcd_data_aside() -> None:
    ctx = Ctx(STACKED)
    state = host_world(ctx, "master03", set(), etcd_data=True)  # reset done, cut before the move
    await make(ResetNode, "master03", node="master03", control_plane=True, skip_etcd_member=True).run(ctx)
    assert not any(a[0] == "kubeadm" for a in ctx.argvs("master03"))
    assert state["etcd_data"] is False and len(state["aside"]) == 1


async def test_kubeadm_clears_the_etcd_data_itself_when_it_removes_the_member() -> None:
    ctx = Ctx(STACKED)
    state = host_world(ctx, "master03", {hostlayout.KUBELET_CONF, hostlayout.ETCD_MANIFEST}, etcd_data=True)
    await make(ResetNode, "master03", node="master03", control_plane=True, skip_etcd_member=False).run(ctx)
    assert ("kubeadm", "reset", "-f") in ctx.argvs("master03")
    assert state["aside"] == [] and state["etcd_data"] is False
    assert not any("/member" in " ".join(a) for a in ctx.argvs("master03"))


async def test_a_host_already_reset_is_not_reset_again_but_its_kubelet_is_disabled() -> None:
    ctx = Ctx(LAB)
    state = host_world(ctx, "worker01", set())
    state["kubelet"] = "enabled-stopped"  # reset by hand, kubelet left enabled
    await make(ResetNode, "worker01", node="worker01", control_plane=False, skip_etcd_member=False).run(ctx)
    argvs = ctx.argvs("worker01")
    assert not any(a[0] == "kubeadm" for a in argvs)
    assert ("systemctl", "disable", "--now", "kubelet") in argvs
    assert ("already reset", {"node": "worker01"}) in ctx.events
    assert state["kubelet"] == "off"


async def test_a_host_without_a_kubelet_unit_is_reset_all_the_same() -> None:
    ctx = Ctx(LAB)
    host_world(ctx, "worker01", set(), kubelet_unit=False)
    await make(ResetNode, "worker01", node="worker01", control_plane=False, skip_etcd_member=False).run(ctx)
    assert ("no kubelet unit to disable", {"node": "worker01"}) in ctx.events


async def test_files_left_after_the_reset_fail_the_step() -> None:
    ctx = Ctx(LAB)
    manifest = f"{hostlayout.K8S_MANIFESTS}/extra.yaml"
    host_world(ctx, "worker01", {hostlayout.KUBELET_CONF, manifest}, reset_leaves={manifest})
    with pytest.raises(CommandError, match=f"left {manifest}"):
        await make(ResetNode, "worker01", node="worker01", control_plane=False, skip_etcd_member=False).run(ctx)


async def test_a_kubelet_still_enabled_fails_the_step() -> None:
    ctx = Ctx(LAB)
    host_world(ctx, "worker01", {hostlayout.KUBELET_CONF}, stays_enabled=True)
    with pytest.raises(CommandError, match="still enabled"):
        await make(ResetNode, "worker01", node="worker01", control_plane=False, skip_etcd_member=False).run(ctx)


async def test_a_failed_reset_fails_the_step_before_the_kubelet_is_touched() -> None:
    ctx = Ctx(LAB)
    host_world(ctx, "worker01", {hostlayout.KUBELET_CONF})
    ctx.transport("worker01").on(("kubeadm", "reset"), exit_status=1,
                                 stderr="error execution phase cleanup-node: boom\n")
    with pytest.raises(CommandError, match="boom"):
        await make(ResetNode, "worker01", node="worker01", control_plane=False, skip_etcd_member=False).run(ctx)
    assert not any(a[0] == "systemctl" for a in ctx.argvs("worker01"))


def test_the_leftovers_script_lists_kubelet_conf_and_manifests(tmp_path: Path) -> None:
    import subprocess

    conf, manifests = tmp_path / "kubelet.conf", tmp_path / "manifests"
    argv = list(cmd.kubernetes_leftovers())
    argv[4:6] = [str(conf), str(manifests)]
    run = lambda: subprocess.run(argv, capture_output=True, text=True, check=True).stdout  # noqa: E731
    assert run() == ""  # neither exists
    manifests.mkdir()
    assert run() == ""  # an empty manifests directory (what kubeadm reset leaves)
    conf.write_text("x")
    (manifests / "etcd.yaml").write_text("x")
    assert run().splitlines() == [str(conf), str(manifests / "etcd.yaml")]


# -- DeleteNode ---------------------------------------------------------------------------------


def api_nodes(ctx: Ctx, nodes: set[str], *, lingers: int = 0, via: str = "master01") -> None:
    """The API on ``via``: ``nodes`` registered; a deleted one is listed ``lingers`` more times."""
    fake = ctx.transport(via)
    left = {"n": lingers}

    def get(call: Call) -> Result:
        name = call.argv[call.argv.index("node") + 1]
        if name in nodes:
            return Result(0, node_json(name), "")
        if left["n"] > 0:
            left["n"] -= 1
            return Result(0, node_json(name), "")
        return Result(1, "", NOT_FOUND.format(name))

    def delete(call: Call) -> Result:
        name = call.argv[call.argv.index("node") + 1]
        if name not in nodes:
            return Result(0, "", "")  # --ignore-not-found
        nodes.discard(name)
        return Result(0, f'node "{name}" deleted\n', "")

    fake.on(lambda w: " get node " in w, respond=get)
    fake.on(lambda w: " delete node " in w, respond=delete)


async def test_delete_node_deletes_and_waits_until_it_is_gone() -> None:
    ctx = Ctx(LAB)
    nodes = {"master01", "worker01"}
    api_nodes(ctx, nodes, lingers=2)
    step = make(DeleteNode, "master01", node="worker01")
    await step.run(ctx)
    assert nodes == {"master01"}
    argvs = ctx.argvs("master01")
    assert argvs[0] == cmd.kubectl("delete", "node", "worker01", "--ignore-not-found")
    assert argvs[1:] == [cmd.get_node("worker01")] * 3  # listed twice more, then NotFound
    assert step.action.value == "delete"


async def test_delete_of_a_node_already_gone_is_done() -> None:
    ctx = Ctx(LAB)
    api_nodes(ctx, {"master01"})
    await make(DeleteNode, "master01", node="worker01").run(ctx)
    assert ctx.events == [("Node deleted", {"node": "worker01"})]


async def test_a_node_that_stays_listed_fails_transiently(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delete_node_module, "GONE_TIMEOUT", 0.0)
    ctx = Ctx(LAB)
    api_nodes(ctx, {"master01", "worker01"}, lingers=10**6)
    with pytest.raises(CommandError, match="Node worker01 to be gone: still listed") as err:
        await make(DeleteNode, "master01", node="worker01").run(ctx)
    assert err.value.transient


async def test_a_delete_the_api_refuses_fails_transiently() -> None:
    ctx = Ctx(LAB)
    ctx.transport("master01").on(lambda w: " delete node " in w, exit_status=1,
                                 stderr="Unable to connect to the server: EOF\n")
    with pytest.raises(CommandError, match="Unable to connect") as err:
        await make(DeleteNode, "master01", node="worker01").run(ctx)
    assert err.value.transient


# -- RemoveStackedMember ------------------------------------------------------------------------


def peer(n: int) -> str:
    return f"https://198.18.0.1{n}:2380"


def client(n: int) -> str:
    return f"https://198.18.0.1{n}:2379"


class StackedEtcd:
    """kubeadm's stacked etcd as master01's member answers etcdctl: a member list, each member's
    health, and ``member remove`` (optionally refused "unhealthy cluster" a few times)."""

    def __init__(self, ctx: Ctx, *, masters: int = 4, sick: set[int] = frozenset(),  # type: ignore[assignment]
                 learners: set[int] = frozenset(), unstarted: set[int] = frozenset(),  # type: ignore[assignment]
                 refusals: int = 0, via: str = "master01", leader: int = 1) -> None:
        self.leader, self.moves = leader, []  # type: ignore[var-annotated]
        self.members = [{"ID": n, "name": "" if n in unstarted else f"master0{n}", "peerURLs": [peer(n)],
                         "clientURLs": [] if n in unstarted else [client(n)],
                         **({"isLearner": True} if n in learners else {})} for n in range(1, masters + 1)]
        self.sick, self.refusals = set(sick), refusals
        fake = ctx.transport(via)
        fake.on(lambda w: w.startswith("etcdctl ") and " member list" in w, respond=self.member_list)
        fake.on(lambda w: w.startswith("etcdctl ") and " endpoint health" in w, respond=self.health)
        fake.on(lambda w: w.startswith("etcdctl ") and " member remove " in w, respond=self.remove)
        fake.on(lambda w: w.startswith("etcdctl ") and " endpoint status" in w, respond=self.status)
        fake.on(lambda w: w.startswith("etcdctl ") and " move-leader " in w, respond=self.move)

    def status(self, call: Call) -> Result:
        endpoints = next(a for a in call.argv if a.startswith("--endpoints=")).split("=", 1)[1].split(",")
        out = [{"Endpoint": e, "Status": {"header": {"member_id": int(e.split(".")[-1].split(":")[0]) - 10},
                                          "leader": self.leader}} for e in endpoints]
        return Result(0, json.dumps(out), "")

    def move(self, call: Call) -> Result:
        self.leader = int(call.argv[-1], 16)
        self.moves.append(call.argv[-1])
        return Result(0, "", "")

    def member_list(self, _call: Call) -> Result:
        return Result(0, json.dumps({"header": {"cluster_id": 7}, "members": self.members}), "")

    def health(self, call: Call) -> Result:
        endpoints = next(a for a in call.argv if a.startswith("--endpoints=")).split("=", 1)[1].split(",")
        out = [{"endpoint": e, "health": int(e.split(".")[-1].split(":")[0]) - 10 not in self.sick, "took": "1ms"}
               for e in endpoints]
        return Result(0 if all(o["health"] for o in out) else 1, json.dumps(out), "")

    def remove(self, call: Call) -> Result:
        if self.refusals:
            self.refusals -= 1
            return Result(1, "", "Error: etcdserver: unhealthy cluster")
        target = next((m for m in self.members if format(m["ID"], "x") == call.argv[-1]), None)
        if target is None:
            return Result(1, "", "Error: etcdserver: member not found")
        self.members.remove(target)
        return Result(0, "{}", "")


async def test_a_leading_member_hands_over_to_the_via_master_before_it_is_removed() -> None:
    """Removing the leader would leave the cluster leaderless until an election (every API
    server's etcd check fails meanwhile): leadership moves to the via master's member first."""
    ctx = Ctx(STACKED)
    etcd = StackedEtcd(ctx, leader=4)
    await remove_step().run(ctx)
    assert etcd.moves == ["1"] and etcd.leader == 1
    assert [m["name"] for m in etcd.members] == ["master01", "master02", "master03"]
    argvs = [" ".join(a) for a in ctx.argvs("master01")]
    move = next(i for i, a in enumerate(argvs) if " move-leader " in a)
    remove = next(i for i, a in enumerate(argvs) if " member remove " in a)
    assert move < remove


async def test_a_member_that_does_not_lead_is_removed_without_a_move() -> None:
    ctx = Ctx(STACKED)
    etcd = StackedEtcd(ctx, leader=2)
    await remove_step().run(ctx)
    assert etcd.moves == [] and etcd.leader == 2


def remove_step(member: int = 4, *, member_id: str | None = None, via: str = "master01") -> Any:
    return make(RemoveStackedMember, via, member=f"master0{member}", member_id=member_id or format(member, "x"),
                peer_url=peer(member))


async def test_remove_stacked_member_through_another_masters_local_member() -> None:
    ctx = Ctx(STACKED)
    etcd = StackedEtcd(ctx)
    await remove_step().run(ctx)
    assert [m["name"] for m in etcd.members] == ["master01", "master02", "master03"]
    argvs = ctx.argvs("master01")
    remove = tools.etcdctl(["https://127.0.0.1:2379"], "member", "remove", "4", tls=tools.STACKED_ETCD,
                           timeout=tools.ETCDCTL_TIMEOUT)
    assert remove == cmd.member_remove_stacked("4")
    assert "--cacert=/etc/kubernetes/pki/etcd/ca.crt" in remove and "--command-timeout=10s" in remove
    assert argvs == [cmd.member_list_stacked(),
                     cmd.stacked_endpoint_health([client(n) for n in (1, 2, 3, 4)]),
                     cmd.endpoint_status([client(n) for n in (1, 2, 3, 4)], stacked=True),
                     remove, cmd.member_list_stacked()]
    assert ("stacked member removed", {"member": "master04", "id": "4"}) in ctx.events


async def test_a_member_already_removed_is_done() -> None:
    ctx = Ctx(STACKED)
    StackedEtcd(ctx, masters=3)
    await remove_step().run(ctx)
    assert ctx.argvs("master01") == [cmd.member_list_stacked()]
    assert ctx.events == [("member already gone", {"member": "master04"})]


async def test_the_member_is_found_by_name_when_its_id_changed() -> None:
    ctx = Ctx(STACKED)
    etcd = StackedEtcd(ctx)
    await remove_step(member_id="abc").run(ctx)  # re-added since the plan: a new ID, the same name
    assert len(etcd.members) == 3
    assert ctx.argvs("master01")[3] == cmd.member_remove_stacked("4")


async def test_a_member_that_never_started_is_found_by_its_peer_url() -> None:
    ctx = Ctx(STACKED)
    etcd = StackedEtcd(ctx, unstarted={4}, learners={4})
    step = make(RemoveStackedMember, "master01", member="master04", member_id="ff",
                peer_url=f"https://[fd00::14]:2380,{peer(4)}")  # the plan joins several with ","
    await step.run(ctx)
    assert [m["name"] for m in etcd.members] == ["master01", "master02", "master03"]
    assert ctx.argvs("master01")[1] == cmd.stacked_endpoint_health([client(n) for n in (1, 2, 3)])


async def test_removal_that_would_break_quorum_is_refused_with_the_arithmetic() -> None:
    ctx = Ctx(STACKED)
    etcd = StackedEtcd(ctx, masters=3, sick={2})
    with pytest.raises(PlanError) as err:
        await remove_step(3).run(ctx)
    assert str(err.value) == (
        "master01: [remove_stacked_member[master01]] refusing to remove etcd member master03: the "
        "cluster has 3 voting members, 2 healthy; after the removal 2 members need a quorum of "
        "⌊2/2⌋+1 = 2 healthy voters, but only 1 would be healthy. Bring the unhealthy members back first")
    assert len(etcd.members) == 3
    assert not any("remove" in argv for argv in ctx.argvs("master01"))


async def test_removing_an_unhealthy_member_keeps_quorum_and_goes_ahead() -> None:
    ctx = Ctx(STACKED)
    etcd = StackedEtcd(ctx, masters=3, sick={3})
    await remove_step(3).run(ctx)
    assert [m["name"] for m in etcd.members] == ["master01", "master02"]


async def test_the_last_voter_is_never_removed() -> None:
    ctx = Ctx(STACKED)
    StackedEtcd(ctx, masters=1, via="master02")
    with pytest.raises(PlanError, match="it is the last voting member"):
        await remove_step(1, via="master02").run(ctx)


async def test_a_member_never_removes_itself() -> None:
    ctx = Ctx(STACKED)
    etcd = StackedEtcd(ctx)
    with pytest.raises(PlanError, match="master01 is the member to remove; removals go through another master"):
        await remove_step(1).run(ctx)
    assert len(etcd.members) == 4


async def test_removal_through_a_learner_or_an_unhealthy_member_is_refused() -> None:
    ctx = Ctx(STACKED)
    StackedEtcd(ctx, masters=5, learners={1})
    with pytest.raises(PlanError, match="master01 is a learner"):
        await remove_step(4).run(ctx)
    ctx = Ctx(STACKED)
    StackedEtcd(ctx, masters=5, sick={1})
    with pytest.raises(PlanError, match="master01's member failed its endpoint health check"):
        await remove_step(4).run(ctx)


async def test_remove_is_retried_while_etcd_says_unhealthy_cluster() -> None:
    ctx = Ctx(STACKED)
    etcd = StackedEtcd(ctx, refusals=2)
    await remove_step().run(ctx)
    assert sum(1 for argv in ctx.argvs("master01") if "remove" in argv) == 3
    assert len(etcd.members) == 3


async def test_any_other_remove_error_fails_at_once() -> None:
    ctx = Ctx(STACKED)
    StackedEtcd(ctx)
    ctx.transport("master01").on(lambda w: " member remove " in w, exit_status=1,
                                 stderr="Error: context deadline exceeded")
    with pytest.raises(CommandError, match="context deadline exceeded"):
        await remove_step().run(ctx)
    assert sum(1 for argv in ctx.argvs("master01") if "remove" in argv) == 1


async def test_a_member_still_listed_after_the_remove_fails_the_postcondition() -> None:
    ctx = Ctx(STACKED)
    StackedEtcd(ctx)
    ctx.transport("master01").on(lambda w: " member remove " in w, stdout="{}")  # says done, does nothing
    with pytest.raises(CommandError, match="still listed") as err:
        await remove_step().run(ctx)
    assert err.value.transient


async def test_an_unreadable_member_list_fails_transiently() -> None:
    ctx = Ctx(STACKED)
    ctx.transport("master01").on(lambda w: " member list" in w, exit_status=1,
                                 stderr="Error: context deadline exceeded")
    with pytest.raises(CommandError, match="could not list the stacked etcd") as err:
        await remove_step().run(ctx)
    assert err.value.transient
