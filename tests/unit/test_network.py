"""The pod network (issue 14 §3): spec, rendered flannel manifest, the probe's reading of the
live objects, the diff (+ / ~ with each field / nothing), the plan's order, plugin none (warning,
refusal of a change to none), the wait step's reading and the check's findings."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import pydantic
import pytest

from hactl.check.evaluate import evaluate
from hactl.check.gather import parse_coredns
from hactl.check.model import CheckData
from hactl.diff import Op, diff
from hactl.errors import PlanError
from hactl.facts.kubernetes import API_JSONPATH, ApiState
from hactl.facts.kubernetes import network_objects as parse_live
from hactl.facts.model import ClusterView, NodeInfo, Observed
from hactl.plan.planner import build_plan
from hactl.plan.steps.wait_pod_network import coredns_state, not_ready_nodes
from hactl.plan.synthetic import PROBED_AT, Synthetic
from hactl.render.cni import MANAGED_BY, ManifestError, differences, manifest_text, network_objects
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.vocabulary import NETWORK, Intent

ROOT = Path(__file__).resolve().parents[2]
LAB = load_file(str(ROOT / "specs" / "lab.yaml")).cluster
NOT_READY = ("KubeletNotReady", "container runtime network not ready: NetworkReady=false "
             "reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized")


def edited(cluster: Cluster, **network: object) -> Cluster:
    doc = cluster.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["network"] = {**doc.get("network", {}), **network}
    return Cluster.model_validate(doc)


def with_view(observed: Observed, **changes: object) -> Observed:
    hosts = dict(observed.hosts)
    for name, host in hosts.items():
        k = host.kubernetes
        if k is not None and k.cluster is not None:
            hosts[name] = replace(host, kubernetes=replace(k, cluster=replace(k.cluster, **changes)))
    return replace(observed, hosts=hosts)


def live(cluster: Cluster) -> dict[str, object]:
    """The objects as the probe reads them back after a server-side apply of the render."""
    return {o.key: copy.deepcopy(o.body) for o in network_objects(cluster)}


def converged(cluster: Cluster = LAB, objects: dict[str, object] | None = None) -> Observed:
    return with_view(Synthetic(cluster).converged().observed(),
                     network_objects=live(cluster) if objects is None else objects)


# -- spec and render ---------------------------------------------------------------------------


def test_the_spec_defaults_to_flannel_and_refuses_what_it_cannot_render() -> None:
    assert (LAB.network.plugin, LAB.network.version) == ("flannel", "v0.25.7")
    assert edited(LAB, version="0.25.6").network.version == "v0.25.6"
    for bad in ({"plugin": "calico"}, {"version": "v0.24.0"}, {"plugin": "manifests"},
                {"manifests": ["a.yaml"]}, {"extra": 1}):
        with pytest.raises(pydantic.ValidationError):
            edited(LAB, **bad)


def test_flannel_is_the_release_manifest_with_the_spec_pod_subnet_and_version() -> None:
    objects = network_objects(edited(LAB, version="v0.25.6"))
    assert [o.key for o in objects] == [
        "Namespace/kube-flannel", "ClusterRole/flannel", "ClusterRoleBinding/flannel",
        "ServiceAccount/kube-flannel/flannel", "ConfigMap/kube-flannel/kube-flannel-cfg",
        "DaemonSet/kube-flannel/kube-flannel-ds"]
    assert all(o.body["metadata"]["labels"][MANAGED_BY] == "hactl" for o in objects)
    net = json.loads(objects[4].body["data"]["net-conf.json"])
    assert net == {"Network": "10.244.0.0/16", "EnableNFTables": False, "Backend": {"Type": "vxlan"}}
    pod = objects[5].body["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["install-cni-plugin", "install-cni"]
    assert pod["initContainers"][1]["command"] + pod["initContainers"][1]["args"] == [
        "cp", "-f", "/etc/kube-flannel/cni-conf.json", "/etc/cni/net.d/10-flannel.conflist"]
    assert pod["containers"][0]["image"] == "docker.io/flannel/flannel:v0.25.6"
    assert pod["initContainers"][0]["image"] == "docker.io/flannel/flannel-cni-plugin:v1.5.1-flannel2"
    doc = LAB.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["kubernetes"]["podSubnet"] = "fd00:10:244::/56"
    six = json.loads(network_objects(Cluster.model_validate(doc))[4].body["data"]["net-conf.json"])
    assert six["IPv6Network"] == "fd00:10:244::/56" and six["EnableIPv4"] is False and "Network" not in six
    assert "kind: DaemonSet" in manifest_text(objects)


def test_user_manifests_are_read_at_plan_time_and_named_on_error(tmp_path: Path) -> None:
    good = tmp_path / "cni.yaml"
    good.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: kube-system}\n"
                    "data: {a: b}\n")
    assert [o.key for o in network_objects(edited(LAB, plugin="manifests", manifests=[str(good)]))] == [
        "ConfigMap/kube-system/c"]
    crd = tmp_path / "crd.yaml"
    crd.write_text("apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: x}\n")
    for path, said in ((tmp_path / "gone.yaml", "cannot read"), (crd, "CustomResourceDefinition")):
        with pytest.raises(ManifestError) as caught:
            network_objects(edited(LAB, plugin="manifests", manifests=[str(path)]))
        assert str(path) in str(caught.value) and said in str(caught.value)


def test_differences_compare_only_the_rendered_fields() -> None:
    want = {"a": {"b": 1, "c": [{"x": 1}]}}
    assert differences(want, {"a": {"b": 1, "c": [{"x": 1, "default": 2}], "extra": 3}}) == []
    assert differences(want, {"a": {"b": 2, "c": [{"x": 1}]}}) == [".a.b: 2 -> 1"]
    assert differences(want, {"a": {"b": 1, "c": []}}) == ['.a.c: [] -> [{"x": 1}]']


# -- the probe -------------------------------------------------------------------------------


def test_the_probe_reads_the_live_objects_and_each_not_ready_reason() -> None:
    items = [{**o.body, "status": {"x": 1}, "metadata": {**o.body["metadata"], "uid": "u",
                                                          "resourceVersion": "7", "managedFields": []}}
             for o in network_objects(LAB)]
    listed = json.dumps({"kind": "List", "items": items}, indent=2).replace("\n", "")
    assert parse_live(listed) == live(LAB)
    assert parse_live("") is None and parse_live("error") is None
    fact = ApiState()
    assert "app.kubernetes.io/managed-by=hactl" in fact.script() and "daemonsets.apps" in fact.script()
    assert "Ready\")].message" in API_JSONPATH
    out = ("node\tmaster01\tFalse\tv1.30.4\t{}\t198.18.0.11\t" + "\t".join(NOT_READY) + "\n"
           "node\tworker01\tTrue\tv1.30.4\t{}\t198.18.0.31\tKubeletReady\tkubelet is posting ready status\n"
           f"network\t{listed}\n")
    answer = fact.parse(out)
    assert answer.not_ready == {"master01": ": ".join(NOT_READY)}
    assert answer.network == live(LAB)


# -- the diff and the plan ---------------------------------------------------------------------


def test_a_fresh_cluster_installs_the_network_right_after_init_and_waits_after_the_joins() -> None:
    plan = build_plan(LAB, Synthetic(LAB).observed(), now=PROBED_AT)
    change = plan.diff.get(NETWORK)
    assert change is not None and change.op is Op.CREATE and change.intents == {Intent.INSTALL_NETWORK}
    assert plan.graph.depends_on("network.install") == ["master[master01].init"]
    assert set(plan.graph.depends_on("network.wait")) >= {
        "network.install", "master[master03].join", "worker[worker01].join", "worker[worker02].join"}
    assert plan.graph.depends_on("cluster.verify") == ["network.wait"]
    install = next(s for s in plan.steps() if s.id == "network.install")
    assert "kubectl --kubeconfig /etc/kubernetes/admin.conf" in install.commands()[1]
    assert "apply --server-side --field-manager=hactl --force-conflicts -f /run/hactl/pod-network.yaml" \
        in install.commands()[1]


def test_a_converged_network_plans_nothing() -> None:
    plan = build_plan(LAB, converged(), now=PROBED_AT)
    assert plan.counts() == (0, 0, 0) and not plan.has_changes


def test_absent_objects_are_created_and_a_changed_field_is_shown() -> None:
    change = diff(LAB, converged(objects={}), now=PROBED_AT).get(NETWORK)
    assert change is not None and change.op is Op.CREATE
    objects = live(LAB)
    cm = copy.deepcopy(objects["ConfigMap/kube-flannel/kube-flannel-cfg"])
    cm["data"]["net-conf.json"] = cm["data"]["net-conf.json"].replace("vxlan", "host-gw")
    objects["ConfigMap/kube-flannel/kube-flannel-cfg"] = cm
    del objects["ServiceAccount/kube-flannel/flannel"]
    plan = build_plan(LAB, converged(objects=objects), now=PROBED_AT)
    change = plan.diff.get(NETWORK)
    assert change is not None and change.op is Op.UPDATE
    assert "missing: ServiceAccount/kube-flannel/flannel" in change.reason
    assert "ConfigMap/kube-flannel/kube-flannel-cfg .data.net-conf.json:" in change.detail.diff
    assert "host-gw" in change.detail.diff
    assert [s.id for s in plan.steps()] == ["network.install", "network.wait", "cluster.verify"]
    version = diff(edited(LAB, version="v0.25.6"), converged(), now=PROBED_AT).get(NETWORK)
    assert version is not None and version.op is Op.UPDATE
    assert "flannel:v0.25.7\" -> \"docker.io/flannel/flannel:v0.25.6" in version.detail.diff


def test_an_api_that_did_not_answer_compares_nothing() -> None:
    observed = with_view(Synthetic(LAB).converged().observed(), network_objects=None)
    assert diff(LAB, observed, now=PROBED_AT).get(NETWORK) is None


def test_plugin_none_warns_which_nodes_stay_not_ready_and_refuses_a_change_to_none() -> None:
    none = edited(LAB, plugin="none")
    fresh = build_plan(none, Synthetic(none).observed(), now=PROBED_AT)
    assert fresh.diff.get(NETWORK) is None and "network.install" not in [s.id for s in fresh.steps()]
    [warning] = fresh.warnings
    assert "stay NotReady" in warning and "master01" in warning and "worker02" in warning
    nodes = Synthetic(none).converged()
    nodes.nodes = [replace(n, ready=False) if n.name == "worker01" else n for n in nodes.nodes]
    observed = with_view(nodes.observed(), network_objects={},
                         not_ready={"worker01": ": ".join(NOT_READY)})
    [warning] = build_plan(none, observed, now=PROBED_AT).warnings
    assert "worker01 (KubeletNotReady: container runtime network not ready" in warning
    assert "master01" not in warning
    with pytest.raises(PlanError) as caught:
        build_plan(none, converged(), now=PROBED_AT)
    assert "network.plugin is none" in str(caught.value) and "does not uninstall a CNI" in str(caught.value)
    assert build_plan(LAB, converged(), now=PROBED_AT).warnings == ()


# -- the wait step and the check ---------------------------------------------------------------


def test_the_wait_names_not_ready_nodes_and_coredns() -> None:
    nodes = {"items": [
        {"metadata": {"name": "m1"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        {"metadata": {"name": "w1"}, "status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": NOT_READY[0], "message": NOT_READY[1]}]}},
        {"metadata": {"name": "w2"}, "status": {}}]}
    assert not_ready_nodes(nodes) == {"w1": ": ".join(NOT_READY), "w2": "no Ready condition yet"}
    assert coredns_state(None) is None
    pending = {"spec": {"replicas": 2}, "status": {"conditions": [
        {"type": "Available", "status": "False", "message": "Deployment does not have minimum availability."}]}}
    assert coredns_state(pending) == ("CoreDNS not available (0/2 replicas available: Deployment does not "
                                      "have minimum availability.)")
    assert coredns_state({"status": {"conditions": [{"type": "Available", "status": "True"}]}}) is None


def test_the_check_reports_every_node_ready_and_coredns() -> None:
    observed = converged()
    ok = parse_coredns({"coredns": (0, json.dumps({"spec": {"replicas": 2}, "status": {
        "availableReplicas": 2, "conditions": [{"type": "Available", "status": "True"}]}}))})
    report = evaluate(LAB, CheckData(observed, PROBED_AT, coredns=ok))
    found = {(f.check, f.severity, f.message) for f in report.findings}
    assert ("nodes", "ok", "every Node Ready (5)") in found
    assert ("coredns", "ok", "available (2/2 replicas available)") in found
    none = edited(LAB, plugin="none")
    s = Synthetic(none).converged()
    s.nodes = [replace(n, ready=False) for n in s.nodes]
    observed = with_view(s.observed(), not_ready={n.name: ": ".join(NOT_READY) for n in s.nodes})
    pending = parse_coredns({"coredns": (0, json.dumps({"spec": {"replicas": 2}, "status": {}}))})
    report = evaluate(none, CheckData(observed, PROBED_AT, coredns=pending))
    nodes = next(f for f in report.findings if f.check == "nodes")
    assert "worker02 (KubeletNotReady: container runtime network not ready" in nodes.message
    assert nodes.hint is not None and "network.plugin is none" in nodes.hint
    dns = next(f for f in report.findings if f.check == "coredns")
    assert dns.severity == "error" and "0/2 replicas available" in dns.message
    assert not report.healthy
    assert parse_coredns({"coredns": (0, "")}) is not None and not parse_coredns({"coredns": (0, "")}).present  # type: ignore[union-attr]


def test_cluster_view_defaults_read_nothing() -> None:
    view = ClusterView(nodes=(NodeInfo("m", True, {}),))
    assert view.network_objects is None and dict(view.not_ready) == {}


async def test_a_saved_install_refuses_a_manifest_that_changed_since_the_plan() -> None:
    from stepctx import Ctx

    from hactl.errors import CommandError
    from hactl.plan.steps.install_pod_network import InstallPodNetwork

    plan = build_plan(LAB, Synthetic(LAB).observed(), now=PROBED_AT)
    step = next(s for s in plan.steps() if s.id == "network.install")
    assert isinstance(step, InstallPodNetwork) and len(step.digest) == 64
    ctx = Ctx(edited(LAB, version="v0.25.6"))
    with pytest.raises(CommandError, match="differs from the one the plan rendered"):
        await step.run(ctx)
    assert not any(fake.calls for fake in ctx.fakes.values())


async def test_the_wait_times_out_naming_each_not_ready_node_and_its_message() -> None:
    import re

    from stepctx import Ctx

    from hactl.errors import CommandError
    from hactl.plan.steps.wait_pod_network import WaitPodNetwork

    nodes = {"items": [
        {"metadata": {"name": "master01"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        {"metadata": {"name": "worker01"}, "status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": NOT_READY[0], "message": NOT_READY[1]}]}}]}
    ctx = Ctx(LAB)
    ctx.transport("master01").on(re.compile(r"get nodes -o json"), stdout=json.dumps(nodes))
    step = WaitPodNetwork(id="network.wait", host="master01", title="t", reason="r", wait=0.0)
    with pytest.raises(CommandError) as caught:
        await step.run(ctx)
    assert ("waiting for every Node Ready and CoreDNS available: NotReady: worker01 (KubeletNotReady: "
            "container runtime network not ready") in str(caught.value)
    assert "master01 (" not in str(caught.value)
