"""Issue 12 §1: the consumers of the etcd member list — kubeadm-config's
``etcd.external.endpoints`` and every master's kube-apiserver ``--etcd-servers`` — are compared
with the spec's members and planned, one master at a time, in the order that never leaves the
API without a listed, healthy member: after the additions, before the removals. And the two step
kinds that do it, run against fake hosts."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from stepctx import Ctx

from hactl.errors import CommandError, PlanError
from hactl.facts.model import Observed
from hactl.plan.planner import build_plan
from hactl.plan.steps.rewrite_etcd_servers import (
    APISERVER_MANIFEST,
    NEW_MANIFEST,
    RewriteEtcdServers,
    with_etcd_servers,
)
from hactl.plan.steps.update_kubeadm_config import UpdateKubeadmConfig, with_endpoints
from hactl.plan.synthetic import PROBED_AT, Synthetic
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.transport.base import Result
from hactl.transport.fake import FakeTransport

SPECS = Path(__file__).resolve().parents[2] / "specs"
URLS = {i: f"https://198.18.0.2{i}:2379" for i in range(1, 6)}


@pytest.fixture(scope="module")
def lab() -> Cluster:
    return load_file(str(SPECS / "lab.yaml")).cluster


def members(cluster: Cluster, numbers: tuple[int, ...]) -> Cluster:
    doc = cluster.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["etcd"]["members"] = [{"name": f"etcd0{i}", "address": f"198.18.0.2{i}"} for i in numbers]
    return Cluster.model_validate(doc)


def using(synthetic: Synthetic, urls: tuple[str, ...], *, config: tuple[str, ...] | None = None) -> Observed:
    """The synthetic facts with every master's --etcd-servers set to ``urls`` and kubeadm-config's
    etcd.external.endpoints to ``config`` (default: the same)."""
    for host in synthetic.cluster.masters:
        facts = synthetic.hosts[host.name].kubernetes
        assert facts is not None
        synthetic._set(host.name, kubernetes=replace(facts, etcd_servers=urls))
    observed = synthetic.observed()
    hosts = dict(observed.hosts)
    for name, host in observed.hosts.items():
        if host.kubernetes is not None and host.kubernetes.cluster is not None:
            hosts[name] = replace(host, kubernetes=replace(host.kubernetes, cluster=replace(
                host.kubernetes.cluster, etcd_endpoints=urls if config is None else config)))
    return replace(observed, hosts=hosts)


def ids(cluster: Cluster, observed: Observed) -> list[str]:
    return [s.id for s in build_plan(cluster, observed, now=PROBED_AT).steps()]


CONSUMERS = ["cluster.kubeadm-config", "master[master01].etcd-servers",
             "master[master02].etcd-servers", "master[master03].etcd-servers"]


def test_a_converged_cluster_has_no_consumer_change(lab: Cluster) -> None:
    assert ids(lab, Synthetic(lab).converged().observed()) == []


def test_growing_etcd_adds_the_members_then_points_the_api_servers_at_all_of_them(lab: Cluster) -> None:
    five = members(lab, (1, 2, 3, 4, 5))
    synthetic = Synthetic(five).etcd(["etcd01", "etcd02", "etcd03"]).lb()
    synthetic.join(*[h.name for h in (*five.masters, *five.workers)])
    plan = build_plan(five, using(synthetic, tuple(URLS[i] for i in (1, 2, 3))), now=PROBED_AT)
    steps = [s.id for s in plan.steps()]
    assert steps[-5:] == [*CONSUMERS, "cluster.verify"]
    assert steps.index("etcd.health") < steps.index("cluster.kubeadm-config")
    assert steps.index("etcd.member[etcd05].promote") < steps.index("cluster.kubeadm-config")
    rewrite = next(s for s in plan.steps() if s.id == "master[master02].etcd-servers")
    assert isinstance(rewrite, RewriteEtcdServers)
    assert rewrite.servers == tuple(URLS.values())
    assert rewrite.address_url == "https://198.18.0.12:6443"
    # one master at a time: each rewrite waits for the one before
    graph = plan.graph
    for before, after in itertools.pairwise(CONSUMERS):
        assert graph.g.has_edge(before, after), (before, after)


def test_removing_members_points_the_api_servers_away_before_the_removals(lab: Cluster) -> None:
    """etcd grown to 5, then its first two members taken out of the spec (the issue's rotation):
    every API server still lists all five."""
    five = members(lab, (1, 2, 3, 4, 5))
    after = members(lab, (3, 4, 5))
    steps = ids(after, Synthetic(five).converged().observed())
    assert steps == [*CONSUMERS, "etcd.member[etcd01].remove", "etcd.member[etcd02].remove",
                     "etcd.health", "cluster.verify"]
    plan = build_plan(after, Synthetic(five).converged().observed(), now=PROBED_AT)
    config = next(s for s in plan.steps() if s.id == "cluster.kubeadm-config")
    assert isinstance(config, UpdateKubeadmConfig)
    assert config.endpoints == (URLS[3], URLS[4], URLS[5])
    text = "\n".join(c.reason for c in plan.diff.effective())
    assert (f"kube-apiserver --etcd-servers on master01: it lists {URLS[1]}, {URLS[2]}, not the "
            "client URL of any etcd member of the spec") in text


def test_members_removed_already_but_still_used_are_a_planned_rewrite(lab: Cluster) -> None:
    """The state issue 12 found: the members are gone, every API server still lists them, and
    the plan said "No changes"."""
    after = members(lab, (3, 4, 5))
    steps = ids(after, using(Synthetic(after).converged(), tuple(URLS[i] for i in (1, 2, 3))))
    assert steps == [*CONSUMERS, "cluster.verify"]


def test_only_the_master_that_differs_is_rewritten(lab: Cluster) -> None:
    synthetic = Synthetic(lab).converged()
    facts = synthetic.hosts["master02"].kubernetes
    assert facts is not None
    synthetic._set("master02", kubernetes=replace(
        facts, etcd_servers=(*(facts.etcd_servers or ()), "https://198.18.0.29:2379")))
    plan = build_plan(lab, synthetic.observed(), now=PROBED_AT)
    assert [s.id for s in plan.steps()] == ["master[master02].etcd-servers", "cluster.verify"]
    assert plan.counts() == (0, 1, 0)


def test_the_order_of_the_urls_and_their_case_are_not_differences(lab: Cluster) -> None:
    urls = tuple(u.upper().replace("HTTPS", "https") + "/" for u in reversed([URLS[1], URLS[2], URLS[3]]))
    assert ids(lab, using(Synthetic(lab).converged(), urls)) == []


def test_a_removal_while_a_master_does_not_answer_is_refused(lab: Cluster) -> None:
    five = members(lab, (1, 2, 3, 4, 5))
    after = members(lab, (3, 4, 5))
    with pytest.raises(PlanError) as caught:
        build_plan(after, Synthetic(five).converged().unreachable("master03").observed(), now=PROBED_AT)
    assert ("master03 did not answer: hactl cannot tell whether its API server uses the etcd "
            "members the plan removes (etcd01, etcd02)") in str(caught.value)


def test_a_master_this_plan_rejoins_is_not_rewritten(lab: Cluster) -> None:
    """kubeadm writes the manifest of a (re-)joined master from kubeadm-config."""
    synthetic = Synthetic(lab).converged()
    synthetic.nodes = [n for n in synthetic.nodes if n.name != "master03"]
    after = members(lab, (1, 2))
    five_urls = tuple(URLS[i] for i in (1, 2, 3))
    steps = ids(after, using(synthetic, five_urls))
    assert "master[master03].etcd-servers" not in steps
    assert "master[master03].join" in steps
    assert steps.index("cluster.kubeadm-config") < steps.index("master[master03].join")


# -- the manifest and the ConfigMap ----------------------------------------------------------

MANIFEST = """apiVersion: v1
kind: Pod
metadata:
  name: kube-apiserver
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-apiserver
    - --advertise-address=198.18.0.11
    - --etcd-servers=https://198.18.0.21:2379,https://198.18.0.22:2379
    - --etcd-cafile=/etc/kubernetes/pki/etcd/ca.crt
    image: registry.k8s.io/kube-apiserver:v1.30.4
"""


def test_only_the_flag_changes_in_the_manifest() -> None:
    out = with_etcd_servers(MANIFEST, (URLS[3], URLS[4]))
    assert out == MANIFEST.replace("https://198.18.0.21:2379,https://198.18.0.22:2379",
                                   f"{URLS[3]},{URLS[4]}")
    quoted = MANIFEST.replace("- --etcd-servers=https://198.18.0.21:2379,https://198.18.0.22:2379",
                              '- "--etcd-servers=https://198.18.0.21:2379"')
    assert f'- "--etcd-servers={URLS[5]}"' in with_etcd_servers(quoted, (URLS[5],))


@pytest.mark.parametrize("text, why", [
    (MANIFEST.replace("    - --etcd-servers=https://198.18.0.21:2379,https://198.18.0.22:2379\n", ""),
     "no --etcd-servers argument"),
    (MANIFEST.replace("    - --etcd-cafile", "    - --etcd-servers=https://x:2379\n    - --etcd-cafile"),
     "2 --etcd-servers arguments"),
])
def test_a_manifest_that_is_not_kubeadms_is_not_guessed_at(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        with_etcd_servers(text, (URLS[1],))


def configmap(endpoints: list[str]) -> dict[str, object]:
    config = {"apiVersion": "kubeadm.k8s.io/v1beta3", "kind": "ClusterConfiguration",
              "kubernetesVersion": "v1.30.4", "controlPlaneEndpoint": "k8s-api.lab:6443",
              "etcd": {"external": {"endpoints": endpoints, "caFile": "/etc/kubernetes/pki/etcd/ca.crt"}},
              "networking": {"podSubnet": "10.244.0.0/16"}}
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kubeadm-config", "namespace": "kube-system", "resourceVersion": "41"},
            "data": {"ClusterConfiguration": yaml.safe_dump(config), "ClusterStatus": "x"}}


def test_only_the_endpoints_change_in_kubeadm_config() -> None:
    out = with_endpoints(configmap([URLS[1], URLS[2]]), (URLS[3], URLS[4]))
    assert out is not None
    assert out["metadata"]["resourceVersion"] == "41"  # the write is refused if it changed since
    assert out["data"]["ClusterStatus"] == "x"
    config = yaml.safe_load(out["data"]["ClusterConfiguration"])
    assert config["etcd"]["external"] == {"endpoints": [URLS[3], URLS[4]],
                                          "caFile": "/etc/kubernetes/pki/etcd/ca.crt"}
    assert config["controlPlaneEndpoint"] == "k8s-api.lab:6443"
    assert with_endpoints(configmap([URLS[4], URLS[3]]), (URLS[3], URLS[4])) is None


def test_kubeadm_config_without_external_etcd_is_refused() -> None:
    cm = configmap([])
    cm["data"] = {"ClusterConfiguration": "etcd:\n  local:\n    dataDir: /var/lib/etcd\n"}
    with pytest.raises(ValueError, match=r"no etcd\.external"):
        with_endpoints(cm, (URLS[1],))


# -- the steps on fake hosts -----------------------------------------------------------------


def healthy_etcd(ctx: Ctx, numbers: tuple[int, ...], via: str = "etcd03") -> None:
    fake = ctx.transport(via)
    fake.on(re.compile("member list"), stdout=json.dumps({"header": {}, "members": [
        {"ID": i, "name": f"etcd0{i}", "peerURLs": [f"https://198.18.0.2{i}:2380"],
         "clientURLs": [URLS[i]]} for i in numbers]}))
    fake.on(re.compile("endpoint health"), stdout=json.dumps(
        [{"endpoint": URLS[i], "health": True} for i in numbers]))


def mirror(flag: str, ready: bool = True) -> str:
    return json.dumps({"spec": {"containers": [{"command": ["kube-apiserver", flag]}]},
                       "status": {"conditions": [{"type": "Ready", "status": str(ready)}]}})


def rewrite_step(servers: tuple[str, ...]) -> RewriteEtcdServers:
    return RewriteEtcdServers(id="master[master01].etcd-servers", host="master01", title="t",
                              reason="r", servers=servers, via="etcd03",
                              address_url="https://198.18.0.11:6443")


SERVERS = (URLS[3], URLS[4], URLS[5])
SHOW_STAT = ("# pxname,svname,status,check_status\nk8s-api,FRONTEND,OPEN,\n"
             "k8s-api-backend,master01,UP,L7OK\nk8s-api-backend,master02,UP,L7OK\n")


def rewrite_world(lab: Cluster, manifest: str, listed: tuple[int, ...] = (3, 4, 5)
                  ) -> tuple[Ctx, RewriteEtcdServers, FakeTransport]:
    """etcd03..05 in the spec, ``listed`` members in etcd's list (all healthy), master01's
    manifest ``manifest``, its mirror Pod already on the new flag and every /readyz ok."""
    ctx = Ctx(members(lab, (3, 4, 5)))
    healthy_etcd(ctx, listed)
    step = rewrite_step(SERVERS)
    master = ctx.transport("master01")
    master.on(("cat", APISERVER_MANIFEST), stdout=manifest)
    master.on(re.compile("kube-apiserver-master01"), stdout=mirror(step.flag))
    master.on(re.compile("readyz"), stdout="ok")
    ctx.transport("lb01").on(re.compile("admin.sock"), stdout="\n")  # haproxy's empty "done"
    ctx.transport("lb01").on(re.compile("show stat"), stdout=SHOW_STAT)
    return ctx, step, master


def test_the_rewrite_writes_through_a_temp_file_and_waits_for_the_new_api_server(lab: Cluster) -> None:
    ctx, step, master = rewrite_world(lab, MANIFEST)
    servers = SERVERS
    answers = iter([mirror("--etcd-servers=old"), mirror(step.flag, ready=False), mirror(step.flag)])
    master.on(re.compile("get pod -n kube-system kube-apiserver-master01"),
              respond=lambda _c: Result(0, next(answers, mirror(step.flag)), ""))
    master.on(re.compile("^(install|cp|mv) "), stdout="")
    asyncio.run(step.run(ctx))
    data, mode = master.files[NEW_MANIFEST]
    assert data.decode() == with_etcd_servers(MANIFEST, servers) and mode == 0o600
    argvs = ctx.argvs("master01")
    moved = argvs.index(("mv", "-f", NEW_MANIFEST, APISERVER_MANIFEST))
    assert any(a[:3] == ("cp", "-p", APISERVER_MANIFEST) for a in argvs[:moved])
    waits = [i for i, a in enumerate(argvs) if "kube-apiserver-master01" in a]
    assert len(waits) == 3 and waits[0] > moved
    own = [a for a in argvs if "--server" in a]
    assert own and own[0][own[0].index("--server") + 1] == "https://198.18.0.11:6443"


def test_a_manifest_already_rewritten_is_not_written_again(lab: Cluster) -> None:
    ctx, _, master = rewrite_world(lab, with_etcd_servers(MANIFEST, SERVERS))
    asyncio.run(rewrite_step(SERVERS).run(ctx))
    assert NEW_MANIFEST not in master.files
    assert not any(a[:1] == ("mv",) for a in ctx.argvs("master01"))


def test_no_rewrite_while_a_listed_member_is_not_a_healthy_voter(lab: Cluster,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from hactl.plan import remote

    async def no_sleep(_seconds: float) -> None:
        return None

    monkeypatch.setattr(remote.asyncio, "sleep", no_sleep)
    monkeypatch.setattr(remote.time, "monotonic", iter(range(0, 100000, 50)).__next__)
    after = members(lab, (3, 4, 5))
    ctx = Ctx(after)
    healthy_etcd(ctx, (1, 2, 3, 4))  # etcd05 is not (yet) in the member list
    with pytest.raises(CommandError, match=f"not the client URL of a started voting member: {URLS[5]}"):
        asyncio.run(rewrite_step((URLS[3], URLS[4], URLS[5])).run(ctx))
    assert ctx.argvs("master01") == []  # the manifest was not even read


def test_members_the_plan_removes_next_do_not_hold_the_rewrite_back(lab: Cluster) -> None:
    """etcd01 and etcd02 are still members while the API servers leave them (the lab found
    rule 2's "nothing unexpected" blocking this)."""
    ctx, step, _ = rewrite_world(lab, with_etcd_servers(MANIFEST, SERVERS), listed=(1, 2, 3, 4, 5))
    asyncio.run(step.run(ctx))
    health = [c for c in ctx.transport("etcd03").calls if "endpoint" in c.argv and "health" in c.argv]
    assert health and all(URLS[1] not in a and URLS[2] not in a for c in health for a in c.argv)


def test_kubeadm_config_is_replaced_with_its_resource_version(lab: Cluster) -> None:
    ctx = Ctx(lab)
    step = UpdateKubeadmConfig(id="cluster.kubeadm-config", host="master01", title="t", reason="r",
                               endpoints=(URLS[3], URLS[4], URLS[5]))
    master = ctx.transport("master01")
    master.on(re.compile("get configmap -n kube-system kubeadm-config"),
              stdout=json.dumps(configmap([URLS[1], URLS[2], URLS[3]])))
    master.on(re.compile("replace -f -"), stdout="configmap/kubeadm-config replaced")
    asyncio.run(step.run(ctx))
    call = master.calls[-1]
    assert "replace" in call.argv and call.stdin is not None
    sent = json.loads(call.stdin)
    assert sent["metadata"]["resourceVersion"] == "41"
    assert yaml.safe_load(sent["data"]["ClusterConfiguration"])["etcd"]["external"]["endpoints"] == \
        [URLS[3], URLS[4], URLS[5]]


def test_a_conflicting_kubeadm_config_write_is_retried(lab: Cluster) -> None:
    ctx = Ctx(lab)
    step = UpdateKubeadmConfig(id="cluster.kubeadm-config", host="master01", title="t", reason="r",
                               endpoints=(URLS[3],))
    master = ctx.transport("master01")
    master.on(re.compile("get configmap"), stdout=json.dumps(configmap([URLS[1]])))
    master.on(re.compile("replace -f -"), exit_status=1, stderr=(
        'Error from server (Conflict): Operation cannot be fulfilled on configmaps "kubeadm-config": '
        "the object has been modified; please apply your changes to the latest version and try again"))
    with pytest.raises(CommandError) as caught:
        asyncio.run(step.run(ctx))
    assert caught.value.transient


def test_the_master_leaves_the_load_balancers_for_its_restart(lab: Cluster) -> None:
    """drain before the new manifest goes in, ready after its API server answers"""
    ctx, step, master = rewrite_world(lab, MANIFEST)
    master.on(re.compile("^(install|cp|mv) "), stdout="")
    order: list[str] = []
    ctx.transport("lb01").on(re.compile("set server"), respond=lambda c: (
        order.append("drain" if "state drain" in c.wire else "ready"), Result(0, "\n", ""))[1])
    master.on(("mv",), respond=lambda c: (order.append("mv"), Result(0, "", ""))[1])
    asyncio.run(step.run(ctx))
    assert order == ["drain", "mv", "ready"]


def test_the_master_goes_back_into_the_load_balancers_when_its_api_server_does_not_come_up(
        lab: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    from hactl.plan import remote

    async def no_sleep(_seconds: float) -> None:
        return None

    monkeypatch.setattr(remote.asyncio, "sleep", no_sleep)
    monkeypatch.setattr("hactl.plan.steps.rewrite_etcd_servers.asyncio.sleep", no_sleep)
    monkeypatch.setattr(remote.time, "monotonic", iter(range(0, 100000, 50)).__next__)
    ctx, step, master = rewrite_world(lab, MANIFEST)
    master.on(re.compile("^(install|cp|mv) "), stdout="")
    master.on(re.compile("kube-apiserver-master01"), stdout=mirror("--etcd-servers=old"))
    with pytest.raises(CommandError, match="has not started the API server from the new manifest"):
        asyncio.run(step.run(ctx))
    sent = [c.wire for c in ctx.transport("lb01").calls if "set server" in c.wire]
    assert len(sent) == 2 and "state drain" in sent[0] and "state ready" in sent[1]


def test_a_load_balancer_that_refuses_the_drain_stops_the_restart(lab: Cluster) -> None:
    ctx, step, master = rewrite_world(lab, MANIFEST)
    master.on(re.compile("^(install|cp|mv) "), stdout="")
    ctx.transport("lb01").on(re.compile("set server"), stdout="No such server.\n")
    with pytest.raises(CommandError, match="haproxy on lb01 refused"):
        asyncio.run(step.run(ctx))
    assert ("mv", "-f", NEW_MANIFEST, APISERVER_MANIFEST) not in ctx.argvs("master01")


def test_the_step_ends_only_once_the_load_balancers_have_the_master_up_again(lab: Cluster) -> None:
    ctx, step, _ = rewrite_world(lab, with_etcd_servers(MANIFEST, SERVERS))
    answers = iter([SHOW_STAT.replace("master01,UP", "master01,DOWN"), SHOW_STAT])
    ctx.transport("lb01").on(re.compile("show stat"), respond=lambda _c: Result(0, next(answers, SHOW_STAT), ""))
    asyncio.run(step.run(ctx))
    assert len([c for c in ctx.transport("lb01").calls if "show stat" in c.wire]) == 2
