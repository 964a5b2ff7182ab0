"""A join interrupted after kubeadm fetched the certificates (hactl SIGKILLed, the host powered
off): the node holds kubeadm's files (pki/ca.crt, pki/ca.key, maybe admin.conf or manifests)
but no kubelet.conf and no Node. A plain ``kubeadm join`` is refused by its preflight for ever
(``[ERROR FileAvailable--etc-kubernetes-pki-ca.crt]``), so the plan resets the node
(``kubeadm reset -f``) and joins it again — checking just before the reset, on the API, that no
Node registered meanwhile, and in a stacked etcd that no member the reset would leave behind is
listed for it. Also: ``kubeadm init`` is never passed for done because admin.conf exists, and
it fails at once when nothing can start the API server.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from stepctx import Ctx

from hactl.diff import Op, diff, join_leftovers
from hactl.errors import CommandError
from hactl.facts.model import ClusterView, KubernetesFacts
from hactl.plan import commands as cmd
from hactl.plan import desired, remote
from hactl.plan.join_ops import ETCD_MANIFEST
from hactl.plan.planner import Plan, build_plan
from hactl.plan.steps import InitControlPlane, JoinControlPlane, JoinWorker
from hactl.plan.steps.complete_init import APISERVER_MANIFEST
from hactl.plan.synthetic import PROBED_AT, Synthetic
from hactl.render import etcd_pki, pki
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.transport.base import Result
from hactl.transport.fake import Call, FakeTransport
from hactl.vocabulary import Intent

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "abcdef.0123456789abcdef"
KEY = "f" * 64
PHRASE = "kubeadm files from an interrupted join, no kubelet.conf, no Node: reset then join"
# what kubeadm join --control-plane has written once download-certs is done
DOWNLOADED = ("ca.crt", "ca.key", "etcd/ca.crt", "apiserver-etcd-client.crt", "apiserver-etcd-client.key",
              "front-proxy-ca.crt", "front-proxy-ca.key", "sa.key", "sa.pub")
GET_NODE = re.compile(r"kubectl .* get node ")
NOT_FOUND = 'Error from server (NotFound): nodes "{}" not found'


@pytest.fixture(scope="module")
def lab() -> Cluster:
    return load_file(str(ROOT / "specs" / "lab.yaml")).cluster


@pytest.fixture(scope="module")
def stacked() -> Cluster:
    return load_file(str(ROOT / "specs" / "stacked.yaml")).cluster


@pytest.fixture(scope="module")
def ca() -> pki.CertKey:
    return etcd_pki.make_etcd_ca(key_type="ecdsa")


@pytest.fixture(autouse=True)
def _fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_sleep(_seconds: float) -> None:
        return None

    monkeypatch.setattr(remote.asyncio, "sleep", no_sleep)
    monkeypatch.setattr("hactl.plan.etcd_ops.asyncio.sleep", no_sleep)
    monkeypatch.setattr(desired, "kubeadm_init_config", lambda cluster, host: "kind: InitConfiguration\n")


def leftovers(pki_files: tuple[str, ...] = DOWNLOADED, *, confs: tuple[str, ...] = (),
              manifests: tuple[str, ...] = ()) -> KubernetesFacts:
    return KubernetesFacts(admin_conf="admin.conf" in confs, kubelet_conf="kubelet.conf" in confs,
                           manifests=manifests, pki_files=tuple(sorted(pki_files)), kubelet_active=False,
                           cert_expiry={}, kubeconfigs=tuple(sorted(confs)))


def up(cluster: Cluster) -> Synthetic:
    """etcd, the LB and master01 up; the other hosts fresh."""
    syn = Synthetic(cluster)
    if cluster.etcd.topology == "external":
        syn.etcd()
    return syn.lb().init()


def plan_of(cluster: Cluster, syn: Synthetic) -> Plan:
    return build_plan(cluster, syn.observed(), now=PROBED_AT)


def step(plan: Plan, step_id: str) -> Any:
    return next(s for s in plan.steps() if s.id == step_id)


# -- the plan ------------------------------------------------------------------------------


def test_certificates_downloaded_no_kubelet_conf_no_node_is_reset_then_joined(lab: Cluster) -> None:
    syn = up(lab)._set("master02", kubernetes=leftovers())
    plan = plan_of(lab, syn)
    change = plan.diff.get("master[master02]")
    assert change is not None and change.op is Op.REPLACE and change.intents == {Intent.REJOIN}
    assert PHRASE in change.reason
    assert "/etc/kubernetes/pki/ca.crt" in change.reason  # what the plain join's preflight refuses
    join = step(plan, "master[master02].join")
    assert join.reset_first and join.title == "Reset and re-join control-plane node master02"
    assert join.reason == change.reason
    assert any(line.startswith("kubeadm reset -f") for line in join.commands())
    assert "cluster.certificate-key" in [s.id for s in plan.steps()]  # a join still needs a key


@pytest.mark.parametrize("files", [
    {"confs": ("admin.conf",)},  # killed between the kubeconfig and the control-plane phase
    {"confs": ("admin.conf", "controller-manager.conf", "scheduler.conf"),
     "manifests": ("kube-controller-manager.yaml",)},
    {"manifests": ("kube-apiserver.yaml",)},
], ids=["admin.conf only", "some manifests", "manifest, no admin.conf"])
def test_every_later_kill_point_before_kubelet_conf_is_reset_too(lab: Cluster, files: dict[str, Any]) -> None:
    plan = plan_of(lab, up(lab)._set("master02", kubernetes=leftovers(**files)))
    change = plan.diff.get("master[master02]")
    assert change is not None and change.op is Op.REPLACE and PHRASE in change.reason
    assert step(plan, "master[master02].join").reset_first


def test_a_worker_with_the_ca_and_bootstrap_kubeconfig_but_no_kubelet_conf_is_reset(lab: Cluster) -> None:
    syn = up(lab)._set("worker01", kubernetes=leftovers(("ca.crt",), confs=("bootstrap-kubelet.conf",)))
    plan = plan_of(lab, syn)
    change = plan.diff.get("worker[worker01]")
    assert change is not None and change.op is Op.REPLACE and PHRASE in change.reason
    assert "/etc/kubernetes/bootstrap-kubelet.conf" in change.reason
    join = step(plan, "worker[worker01].join")
    assert join.reset_first and join.title == "Reset and re-join worker node worker01"
    assert step(plan, "worker[worker02].join").reset_first is False  # a fresh worker: plain join


def test_fresh_hosts_and_hactls_own_etcd_client_files_are_a_plain_join(lab: Cluster) -> None:
    client = ("etcd/ca.crt", "apiserver-etcd-client.crt", "apiserver-etcd-client.key")
    assert join_leftovers(leftovers(())) == []
    assert join_leftovers(leftovers(client)) == []
    plan = plan_of(lab, up(lab)._set("master02", kubernetes=leftovers(client)))
    change = plan.diff.get("master[master02]")
    assert change is not None and change.op is Op.CREATE and change.intents == {Intent.JOIN}
    assert not step(plan, "master[master02].join").reset_first


def test_a_joined_node_is_never_planned_for_a_reset(lab: Cluster) -> None:
    syn = up(lab).join("master02", "worker01")
    changes = diff(lab, syn.observed(), now=PROBED_AT)
    assert changes.get("master[master02]").op is Op.NOOP  # type: ignore[union-attr]
    assert changes.get("worker[worker01]").op is Op.NOOP  # type: ignore[union-attr]
    # kubelet.conf on the host: never this path (the existing one needs a lost Node)
    facts = syn.hosts["master02"].kubernetes
    assert facts is not None and join_leftovers(facts) == []


def test_files_without_kubelet_conf_but_a_registered_node_are_not_reset(lab: Cluster) -> None:
    syn = up(lab).join("master02")
    syn._set("master02", kubernetes=leftovers())  # the Node master02 stays in the API's list
    change = diff(lab, syn.observed(), now=PROBED_AT).get("master[master02]")
    assert change is not None and change.op is not Op.REPLACE and "reset" not in change.reason


def test_api_not_answering_says_the_node_is_checked_before_the_reset(lab: Cluster) -> None:
    syn = up(lab)._set("master02", kubernetes=leftovers())
    obs = syn.observed()
    m1 = obs.hosts["master01"]
    assert m1.kubernetes is not None
    down = ClusterView(errors={"api": "The connection to the server k8s-api.lab:6443 was refused"})
    hosts = {**obs.hosts, "master01": replace(m1, kubernetes=replace(m1.kubernetes, cluster=down))}
    change = diff(lab, replace(obs, hosts=hosts), now=PROBED_AT).get("master[master02]")
    assert change is not None and change.op is Op.REPLACE
    assert "no Node known (the API did not answer; checked again before the reset)" in change.reason


def test_stacked_rejoin_shows_the_member_checks(stacked: Cluster) -> None:
    plan = plan_of(stacked, up(stacked)._set("master02", kubernetes=leftovers(
        ("ca.crt", "ca.key", "etcd/ca.crt", "etcd/ca.key"))))
    lines = step(plan, "master[master02].join").commands()
    assert any("stacked etcd lists a member for this host" in line for line in lines)
    assert lines.index("check again that no Node is registered for this host (else nothing to redo)") < \
        next(i for i, line in enumerate(lines) if line.startswith("kubeadm reset -f"))


# -- the control-plane join step -----------------------------------------------------------


def api_world(ctx: Ctx, ca: pki.CertKey, node: str, *, members: str | None = None) -> FakeTransport:
    """master01: /readyz ok, token/key/CA answers; ``node`` not registered until it joins."""
    via = ctx.transport("master01")
    via.on(re.compile("/readyz"), stdout="ok")
    via.on(("kubeadm", "token", "create"), stdout=f"{TOKEN}\n")
    via.on(("kubeadm", "init", "phase", "upload-certs"), stdout=f"{KEY}\n")
    via.on(("cat", cmd.K8S_CA_CERT), stdout=ca.cert_pem().decode())
    via.on(("install",))
    via.on(GET_NODE, exit_status=1,
           stderr=NOT_FOUND.format(node))
    if members is not None:
        via.on(re.compile("member list"), stdout=members)
        health = [{"endpoint": "https://198.18.2.11:2379", "health": True}]
        via.on(re.compile("endpoint health"), stdout=json.dumps(health))
    host = ctx.transport(node)
    host.on(("test",), exit_status=1)
    host.on(("install",))
    host.on(("rm", "-f"))
    host.on(("kubeadm", "reset"))
    host.on(("systemctl", "enable", "kubelet"))
    node_json = json.dumps({"metadata": {"name": node, "labels": {"node-role.kubernetes.io/control-plane": ""}}})

    def joined(_call: Call) -> Result:
        via.on(GET_NODE, stdout=node_json)
        return Result(0, "", "")

    host.on(("kubeadm", "join"), respond=joined)
    return via


def cp_step(**kw: Any) -> JoinControlPlane:
    return JoinControlPlane(id="master[master02].join", host="master02", title="t", reason="r", via="master01",
                            **kw)


def heads(ctx: Ctx, host: str) -> list[tuple[str, ...]]:
    return [a[:2] for a in ctx.argvs(host)]


async def test_rejoin_waits_for_the_api_then_checks_the_node_then_resets(lab: Cluster, ca: pki.CertKey) -> None:
    ctx = Ctx(lab)
    via = api_world(ctx, ca, "master02")
    await cp_step(reset_first=True).run(ctx)
    assert heads(ctx, "master02") == [("kubeadm", "reset"), ("systemctl", "enable"), ("kubeadm", "join"),
                                      ("rm", "-f")]
    calls = [c.wire for c in via.calls]
    readyz = next(i for i, w in enumerate(calls) if "/readyz" in w)
    node = next(i for i, w in enumerate(calls) if "get node master02" in w)
    assert readyz < node


async def test_the_api_not_answering_the_node_question_never_resets(lab: Cluster, ca: pki.CertKey) -> None:
    ctx = Ctx(lab)
    via = api_world(ctx, ca, "master02")
    via.on(GET_NODE, exit_status=1,
           stderr="Unable to connect to the server: dial tcp 198.18.0.10:6443: i/o timeout")
    with pytest.raises(CommandError, match="whether Node master02 is registered") as err:
        await cp_step(reset_first=True).run(ctx)
    assert err.value.transient
    assert ("kubeadm", "reset") not in heads(ctx, "master02")


async def test_a_node_registered_meanwhile_is_left_alone(lab: Cluster, ca: pki.CertKey) -> None:
    ctx = Ctx(lab)
    via = api_world(ctx, ca, "master02")
    via.on(GET_NODE, stdout='{"metadata": {}}')
    await cp_step(reset_first=True).run(ctx)
    assert ctx.argvs("master02") == []


async def test_admin_conf_appearing_after_the_plan_is_not_taken_for_a_joined_node(
        lab: Cluster, ca: pki.CertKey) -> None:
    ctx = Ctx(lab)
    api_world(ctx, ca, "master02")
    ctx.transport("master02").on(("test", "-e", cmd.ADMIN_CONF))
    with pytest.raises(CommandError, match="no Node master02 is registered") as err:
        await cp_step().run(ctx)
    assert "hactl plan" in (err.value.hint or "")
    assert not any(a[0] == "kubeadm" for a in ctx.argvs("master02"))


def members(*rows: tuple[int, str, str]) -> str:
    return json.dumps({"members": [
        {"ID": i, "name": n, "peerURLs": [p], "clientURLs": [p.replace("2380", "2379")] if n else []}
        for i, n, p in rows]})


M1 = (1, "master01", "https://198.18.2.11:2380")


async def test_stacked_member_the_reset_would_leave_behind_is_refused_before_the_reset(
        stacked: Cluster, ca: pki.CertKey) -> None:
    ctx = Ctx(stacked)
    api_world(ctx, ca, "master02", members=members(M1, (255, "", "https://198.18.2.12:2380")))
    with pytest.raises(CommandError, match="left etcd member ff") as err:
        await cp_step(reset_first=True, stacked_etcd=True).run(ctx)
    assert "added but never started" in err.value.message and "quorum" in err.value.message
    assert "member remove ff" in (err.value.hint or "")
    assert not err.value.transient
    assert not any(a[0] == "kubeadm" for a in ctx.argvs("master02"))


async def test_stacked_member_with_its_manifest_is_removed_by_the_reset_and_checked(
        stacked: Cluster, ca: pki.CertKey) -> None:
    ctx = Ctx(stacked)
    via = api_world(ctx, ca, "master02", members=members(M1, (2, "master02", "https://198.18.2.12:2380")))
    m2 = ctx.transport("master02")
    m2.on(("test", "-e", ETCD_MANIFEST))

    def reset(_call: Call) -> Result:  # kubeadm reset removes the member it has a manifest for
        via.on(re.compile("member list"), stdout=members(M1))
        return Result(0, "", "")

    m2.on(("kubeadm", "reset"), respond=reset)
    await cp_step(reset_first=True, stacked_etcd=True).run(ctx)
    assert ("kubeadm", "join") in heads(ctx, "master02")


async def test_stacked_member_left_after_the_reset_stops_the_join(stacked: Cluster, ca: pki.CertKey) -> None:
    ctx = Ctx(stacked)
    api_world(ctx, ca, "master02", members=members(M1, (2, "master02", "https://198.18.2.12:2380")))
    ctx.transport("master02").on(("test", "-e", ETCD_MANIFEST))
    with pytest.raises(CommandError, match="did not remove its etcd member 2"):
        await cp_step(reset_first=True, stacked_etcd=True).run(ctx)
    assert ("kubeadm", "reset") in heads(ctx, "master02")
    assert ("kubeadm", "join") not in heads(ctx, "master02")


async def test_worker_rejoin_never_resets_when_the_api_cannot_say(lab: Cluster) -> None:
    ctx = Ctx(lab)
    ctx.transport("master01").on(("kubectl",), exit_status=1, stderr="Unable to connect to the server")
    with pytest.raises(CommandError, match="whether Node worker01 is registered"):
        await JoinWorker(id="w", host="worker01", title="t", reason="r", via="master01",
                         reset_first=True).run(ctx)
    assert ctx.argvs("worker01") == []


# -- kubeadm init --------------------------------------------------------------------------


def init_world(ctx: Ctx, ca: pki.CertKey, *, manifest: bool, kubelet: str = "active") -> FakeTransport:
    m = ctx.transport("master01")
    m.on(("test",), exit_status=1)
    m.on(("install",))
    m.on(("rm", "-f"))
    m.on(("mkdir",))
    m.on(("systemctl", "enable", "kubelet"))
    m.on(("kubeadm", "init"), stdout=f"kubeadm join k8s-api.lab:6443 --token {TOKEN} \\\n"
         f"  --discovery-token-ca-cert-hash {pki.spki_sha256(ca.cert)}\n")
    if manifest:
        m.on(("test", "-e", APISERVER_MANIFEST))
    m.on(("systemctl", "is-active", "kubelet"), stdout=f"{kubelet}\n", exit_status=0 if kubelet == "active" else 3)
    m.on(re.compile("/readyz"), stdout="ok")
    ctx.transport("etcd01").on(re.compile("get /registry"), stdout='{"count": 0}')
    return m


def init_step() -> InitControlPlane:
    return InitControlPlane(id="master[master01].init", host="master01", title="t", reason="r")


async def test_init_with_admin_conf_already_there_fails_instead_of_passing_for_done(lab: Cluster) -> None:
    ctx = Ctx(lab)
    ctx.transport("master01").on(("test", "-e", cmd.ADMIN_CONF))
    with pytest.raises(CommandError) as err:
        await init_step().run(ctx)
    assert err.value.message == ("admin.conf exists but kubeadm init did not finish in this run (an earlier "
                                 "attempt stopped half-way)")
    assert err.value.host == "master01" and err.value.step == "master[master01].init"
    assert err.value.hint == "run `hactl plan` again: it completes an interrupted init phase by phase"
    assert not err.value.transient


async def test_init_fails_at_once_when_no_apiserver_manifest_can_start_the_api(
        lab: Cluster, ca: pki.CertKey) -> None:
    ctx = Ctx(lab)
    m = init_world(ctx, ca, manifest=False)
    with pytest.raises(CommandError, match=r"kube-apiserver\.yaml does not exist"):
        await init_step().run(ctx)
    assert not any("/readyz" in c.wire for c in m.calls)  # no 180 s wait for what cannot come


async def test_init_fails_at_once_when_the_kubelet_is_not_running(lab: Cluster, ca: pki.CertKey) -> None:
    ctx = Ctx(lab)
    m = init_world(ctx, ca, manifest=True, kubelet="inactive")
    with pytest.raises(CommandError, match=r"kubelet, which starts it .* is inactive"):
        await init_step().run(ctx)
    assert not any("/readyz" in c.wire for c in m.calls)


async def test_init_checks_the_api_can_come_then_waits_for_readyz(lab: Cluster, ca: pki.CertKey) -> None:
    ctx = Ctx(lab)
    m = init_world(ctx, ca, manifest=True)
    await init_step().run(ctx)
    wires = [c.wire for c in m.calls]
    manifest = next(i for i, w in enumerate(wires) if APISERVER_MANIFEST in w)
    readyz = next(i for i, w in enumerate(wires) if "/readyz" in w)
    assert manifest < readyz
    assert any(line.startswith(f"check {APISERVER_MANIFEST} exists") for line in init_step().commands())


async def test_a_retry_after_this_runs_own_attempt_was_cut_resets_first(lab: Cluster, ca: pki.CertKey) -> None:
    # The connection dropped while `kubeadm join` ran (tests/lab/test_faults_lab's "SSH connection
    # dropped mid-command"): the step's retry in the same apply ran a plain join over the first
    # attempt's files, which kubeadm's preflight refuses. The retry resets first, as the plan would.
    ctx = Ctx(lab)
    api_world(ctx, ca, "master02")
    host = ctx.transport("master02")
    host.on(("kubeadm", "join"), respond=lambda _c: (_ for _ in ()).throw(
        CommandError("SSH connection lost while `kubeadm join` ran", host="master02", transient=True)))
    with pytest.raises(CommandError, match="connection lost"):
        await cp_step().run(ctx)
    assert ("kubeadm", "reset") not in heads(ctx, "master02")  # a first attempt resets nothing
    api_world(ctx, ca, "master02")  # the retry's join goes through
    await cp_step().run(ctx)
    tail = heads(ctx, "master02")[-4:]
    assert tail == [("kubeadm", "reset"), ("systemctl", "enable"), ("kubeadm", "join"), ("rm", "-f")]
