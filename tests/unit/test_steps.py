"""Step kinds run against hactl's FakeTransport: exact commands, idempotence, no secrets in what
is logged or displayed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from stepctx import Ctx

from hactl.errors import CommandError, PlanError
from hactl.plan import commands as cmd
from hactl.plan import desired, remote
from hactl.plan.steps import (
    AddEtcdMember,
    BootstrapEtcdMember,
    ConfigureHAProxy,
    GenerateEtcdCA,
    InitControlPlane,
    InstallEtcdCerts,
    JoinControlPlane,
    JoinWorker,
    PromoteEtcdMember,
    RemoveEtcdMember,
    StartEtcdMember,
)
from hactl.plan.steps.complete_init import APISERVER_MANIFEST
from hactl.render import etcd_pki, pki
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.transport.base import Result
from hactl.transport.fake import Call

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "abcdef.0123456789abcdef"
KEY = "f" * 64




@pytest.fixture()
def lab() -> Cluster:
    return load_file(str(ROOT / "specs" / "lab.yaml")).cluster


@pytest.fixture(autouse=True)
def _fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_sleep(_seconds: float) -> None:
        return None

    monkeypatch.setattr(remote.asyncio, "sleep", no_sleep)


@pytest.fixture(scope="module")
def ca() -> pki.CertKey:
    return etcd_pki.make_etcd_ca(key_type="ecdsa")


def members_json(*members: tuple[int, str, str, bool]) -> str:
    return json.dumps({"header": {}, "members": [
        {"ID": i, "name": n, "peerURLs": [p], "clientURLs": [p.replace("2380", "2379")] if n else [],
         **({"isLearner": True} if learner else {})}
        for i, n, p, learner in members]})


THREE = ((1, "etcd01", "https://198.18.0.21:2380", False), (2, "etcd02", "https://198.18.0.22:2380", False),
         (3, "etcd03", "https://198.18.0.23:2380", False))


def step_args(cls: type, **kw: Any) -> Any:
    return cls(id=kw.pop("id", "s"), host=kw.pop("host"), title="t", reason="r", **kw)


# -- HAProxy -------------------------------------------------------------------------------


async def test_haproxy_unchanged_and_running_does_nothing(lab: Cluster) -> None:
    ctx = Ctx(lab)
    import hashlib

    want = hashlib.sha256(desired.haproxy_cfg(lab).encode()).hexdigest()
    ctx.transport("lb01").on(("sha256sum",), stdout=f"{want}  {cmd.HAPROXY_CFG}\n")
    ctx.transport("lb01").on(("systemctl", "is-active"), stdout="active\n")
    await step_args(ConfigureHAProxy, host="lb01").run(ctx)
    assert ctx.transport("lb01").files == {}
    assert not any(a[:2] == ("systemctl", "reload") for a in ctx.argvs("lb01"))


async def test_haproxy_changed_checks_moves_and_reloads_gracefully(lab: Cluster) -> None:
    ctx = Ctx(lab)
    fake = ctx.transport("lb01")
    fake.on(("sha256sum",), stdout=f"{'0' * 64}  {cmd.HAPROXY_CFG}\n")
    fake.on(("systemctl", "is-active"), stdout="active\n")
    fake.on(("haproxy", "-c"), stdout="Configuration file is valid\n")
    fake.on(("mv",))
    fake.on(("systemctl", "reload"))
    await step_args(ConfigureHAProxy, host="lb01").run(ctx)
    data, mode = fake.files[cmd.HAPROXY_NEW]
    assert data.decode() == desired.haproxy_cfg(lab) and mode == 0o644
    argvs = ctx.argvs("lb01")
    assert ("haproxy", "-c", "-f", cmd.HAPROXY_NEW) in argvs
    check, move, reload = (argvs.index(("haproxy", "-c", "-f", cmd.HAPROXY_NEW)),
                           argvs.index(("mv", "-f", cmd.HAPROXY_NEW, cmd.HAPROXY_CFG)),
                           argvs.index(("systemctl", "reload", "haproxy")))
    assert check < move < reload
    assert not any("restart" in a for a in argvs)


async def test_haproxy_invalid_config_is_never_installed(lab: Cluster) -> None:
    ctx = Ctx(lab)
    fake = ctx.transport("lb01")
    fake.on(("sha256sum",), exit_status=1)
    fake.on(("systemctl", "is-active"), stdout="active\n")
    fake.on(("haproxy", "-c"), exit_status=1, stderr="[ALERT] parsing error\n")
    fake.on(("rm",))
    with pytest.raises(CommandError, match="parsing error"):
        await step_args(ConfigureHAProxy, host="lb01").run(ctx)
    assert ("rm", "-f", cmd.HAPROXY_NEW) in ctx.argvs("lb01")
    assert not any(a[0] == "mv" for a in ctx.argvs("lb01"))


async def test_haproxy_not_running_is_enabled_and_started(lab: Cluster) -> None:
    ctx = Ctx(lab)
    fake = ctx.transport("lb01")
    fake.on(("sha256sum",), exit_status=1)
    fake.on(("systemctl", "is-active"), exit_status=3, stdout="inactive\n")
    fake.on(("haproxy", "-c"))
    fake.on(("mv",))
    fake.on(("systemctl", "enable", "--now"),
            respond=lambda _c: (fake.on(("systemctl", "is-active"), stdout="active\n"), Result(0, "", ""))[1])
    await step_args(ConfigureHAProxy, host="lb01").run(ctx)
    assert ("systemctl", "enable", "--now", "haproxy") in ctx.argvs("lb01")
    assert not any(a[:2] == ("systemctl", "reload") for a in ctx.argvs("lb01"))


# -- PKI -----------------------------------------------------------------------------------


async def test_generate_ca_only_when_no_member_has_one(lab: Cluster) -> None:
    ctx = Ctx(lab)
    for name in ("etcd01", "etcd02", "etcd03"):
        ctx.transport(name).on(cmd.etcd_ca_present(), exit_status=1)
    ctx.transport("etcd01").on(("install",))
    await step_args(GenerateEtcdCA, host="etcd01").run(ctx)
    files = ctx.transport("etcd01").files
    key_pem, key_mode = files[cmd.ETCD_CA_KEY]
    cert_pem, cert_mode = files[cmd.ETCD_CA_CERT]
    assert key_mode == 0o600 and cert_mode == 0o644
    ca = pki.CertKey.from_pem(cert_pem, key_pem)
    assert pki.is_ca(ca.cert) and ca.common_name == "etcd-ca"
    assert "PRIVATE" not in repr(ctx.events)

    again = Ctx(lab)
    again.transport("etcd01").on(cmd.etcd_ca_present(), exit_status=1)
    again.transport("etcd02").on(cmd.etcd_ca_present())
    await step_args(GenerateEtcdCA, host="etcd01").run(again)
    assert again.transport("etcd01").files == {}


async def test_member_certs_are_issued_from_the_ca_read_off_a_member(lab: Cluster, ca: pki.CertKey) -> None:
    ctx = Ctx(lab)
    ctx.transport("etcd03").on(("test", "-e"), exit_status=1)
    ctx.transport("etcd03").on(("install",))
    ctx.transport("etcd01").on(cmd.etcd_ca_present())
    ctx.transport("etcd01").on(("cat", cmd.ETCD_CA_CERT, cmd.ETCD_CA_KEY),
                               stdout=(ca.cert_pem() + ca.key_pem()).decode())
    await step_args(InstallEtcdCerts, host="etcd03", ca_host="etcd01").run(ctx)
    files = ctx.transport("etcd03").files
    assert {p for p, (_d, m) in files.items() if m == 0o600} == {
        cmd.ETCD_CA_KEY, cmd.ETCD_SERVER_KEY, cmd.ETCD_PEER_KEY, cmd.ETCD_CLIENT_KEY}
    server = pki.cert_from_pem(files[cmd.ETCD_SERVER_CERT][0])
    assert pki.issued_by(server, ca.cert)
    _dns, ips = pki.subject_alt_names(server)
    assert "198.18.0.23" in {str(ip) for ip in ips}
    assert files[cmd.ETCD_CA_CERT][0] == ca.cert_pem()


async def test_member_certs_without_a_ca_key_say_where_it_goes(lab: Cluster) -> None:
    ctx = Ctx(lab)
    for name in ("etcd01", "etcd02", "etcd03"):
        ctx.transport(name).on(("test", "-e"), exit_status=1)
    with pytest.raises(CommandError) as info:
        await step_args(InstallEtcdCerts, host="etcd03", ca_host="etcd01").run(ctx)
    assert "no etcd member holds the etcd CA key (/etc/etcd/pki/ca.key)" in str(info.value)
    assert "copy its CA key to /etc/etcd/pki/ca.key (mode 0600) on one member" in info.value.hint
    assert ctx.transport("etcd03").files == {}


# -- etcd membership -----------------------------------------------------------------------


async def test_bootstrap_member_starts_without_blocking(lab: Cluster) -> None:
    ctx = Ctx(lab)
    fake = ctx.transport("etcd02")
    fake.on(("sh",))  # preparing the data dir (moves entries aside, never deletes)
    fake.on(cmd.data_dir_members("/var/lib/etcd"))  # no member/ in or below the data dir
    fake.on(("systemctl",))
    await step_args(BootstrapEtcdMember, host="etcd02").run(ctx)
    argvs = ctx.argvs("etcd02")
    assert not any(a[0] in ("find", "rm") for a in argvs)
    assert any(a[:2] == ("sh", "-c") and "mv -t" in fake.calls[i].wire for i, a in enumerate(argvs))
    assert argvs[-1] == ("systemctl", "start", "--no-block", "etcd")
    env = fake.files[cmd.ETCD_ENV][0].decode()
    assert 'ETCD_INITIAL_CLUSTER_STATE="new"' in env
    assert "etcd01=https://198.18.0.21:2380,etcd02=https://198.18.0.22:2380" in env


async def test_bootstrap_never_empties_a_data_dir_holding_member_data(lab: Cluster) -> None:
    ctx = Ctx(lab)
    fake = ctx.transport("etcd02")
    fake.on(cmd.data_dir_members("/var/lib/etcd"), stdout="/var/lib/etcd/member\n")
    fake.on(("systemctl",))
    await step_args(BootstrapEtcdMember, host="etcd02").run(ctx)
    assert not any(a[0] == "find" for a in ctx.argvs("etcd02"))


@pytest.mark.parametrize("kind", ["bootstrap", "start"])
async def test_member_data_one_level_down_is_never_emptied(lab: Cluster, kind: str) -> None:
    # Debian's packaged etcd keeps its data in /var/lib/etcd/default/member
    ctx = Ctx(lab)
    fake = ctx.transport("etcd03")
    fake.on(cmd.data_dir_members("/var/lib/etcd"), stdout="/var/lib/etcd/default/member\n")
    for prefix in (("install",), ("find",), ("systemctl",)):
        fake.on(prefix)
    ctx.transport("etcd01").on(re.compile(r"member list"),
                               stdout=members_json(*THREE[:2], (3, "", "https://198.18.0.23:2380", True)))
    step = (step_args(BootstrapEtcdMember, host="etcd03") if kind == "bootstrap"
            else step_args(StartEtcdMember, host="etcd03", via="etcd01"))
    with pytest.raises(CommandError, match=r"/var/lib/etcd holds another etcd's member data "
                       r"\(/var/lib/etcd/default/member\); hactl never deletes etcd data: "
                       r"move it away by hand \(e\.g\. mv /var/lib/etcd/default /var/lib/etcd/default\.old\)"):
        await step.run(ctx)
    assert ctx.argvs("etcd03") == [cmd.data_dir_members("/var/lib/etcd")]  # nothing else ran
    assert fake.files == {}


async def test_add_member_as_learner_once(lab: Cluster) -> None:
    ctx = Ctx(lab)
    fake = ctx.transport("etcd01")
    fake.on(re.compile(r"member list"), stdout=members_json(*THREE[:2]))
    fake.on(re.compile(r"member add"))
    await step_args(AddEtcdMember, host="etcd01", member="etcd03").run(ctx)
    add = [a for a in ctx.argvs("etcd01") if "add" in a]
    assert add and add[0][-3:] == ("etcd03", "--peer-urls=https://198.18.0.23:2380", "--learner")
    again = Ctx(lab)
    again.transport("etcd01").on(re.compile(r"member list"), stdout=members_json(*THREE))
    await step_args(AddEtcdMember, host="etcd01", member="etcd03").run(again)
    assert not any("add" in a for a in again.argvs("etcd01"))


async def test_promote_retries_until_the_learner_is_in_sync(lab: Cluster) -> None:
    ctx = Ctx(lab)
    fake = ctx.transport("etcd01")
    state = {"promoted": False, "tries": 0}

    def listing(_call: Call) -> Result:
        third = (3, "etcd03", "https://198.18.0.23:2380", not state["promoted"])
        return Result(0, members_json(*THREE[:2], third), "")

    def promote(_call: Call) -> Result:
        state["tries"] += 1
        if state["tries"] < 3:
            return Result(1, "", "Error: etcdserver: can only promote a learner member which is in sync with leader")
        state["promoted"] = True
        return Result(0, "Member 3 promoted\n", "")

    fake.on(re.compile(r"member list"), respond=listing)
    fake.on(re.compile(r"member promote"), respond=promote)
    await step_args(PromoteEtcdMember, host="etcd01", member="etcd03").run(ctx)
    assert state["tries"] == 3
    assert next(a for a in ctx.argvs("etcd01") if "promote" in a)[-1] == "3"


async def test_remove_refuses_when_quorum_would_break(lab: Cluster) -> None:
    ctx = Ctx(lab)
    fake = ctx.transport("etcd01")
    fake.on(re.compile(r"member list"), stdout=members_json(*THREE))
    health = [{"endpoint": "https://198.18.0.21:2379", "health": True},
              {"endpoint": "https://198.18.0.22:2379", "health": False},
              {"endpoint": "https://198.18.0.23:2379", "health": False}]
    fake.on(re.compile(r"endpoint health"), stdout=json.dumps(health), exit_status=1)
    with pytest.raises(PlanError, match=r"3 voting members, 1 healthy"):
        await step_args(RemoveEtcdMember, host="etcd01", member="etcd01", member_id="1").run(ctx)
    assert not any("remove" in a for a in ctx.argvs("etcd01"))


async def test_remove_through_another_member(lab: Cluster) -> None:
    ctx = Ctx(lab)
    fake = ctx.transport("etcd01")
    fake.on(re.compile(r"member list"), stdout=members_json(*THREE))
    health = [{"endpoint": f"https://198.18.0.2{i}:2379", "health": True} for i in (1, 2, 3)]
    fake.on(re.compile(r"endpoint health"), stdout=json.dumps(health))
    fake.on(re.compile(r"member remove"))
    await step_args(RemoveEtcdMember, host="etcd01", member="etcd03", member_id="3").run(ctx)
    assert next(a for a in ctx.argvs("etcd01") if "remove" in a)[-1] == "3"


# -- kubeadm -------------------------------------------------------------------------------


@pytest.fixture()
def kubeadm_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(desired, "kubeadm_init_config", lambda cluster, host: "kind: InitConfiguration\n")


def node_json(name: str, cp: bool) -> str:
    labels = {"node-role.kubernetes.io/control-plane": ""} if cp else {}
    return json.dumps({"metadata": {"name": name, "labels": labels}})


async def test_init_is_never_rerun(lab: Cluster) -> None:
    ctx = Ctx(lab)
    ctx.transport("master01").on(("test", "-e", cmd.ADMIN_CONF))
    with pytest.raises(CommandError, match="did not finish in this run"):
        await step_args(InitControlPlane, host="master01").run(ctx)
    assert ctx.argvs("master01") == [("test", "-e", cmd.ADMIN_CONF)]


async def test_init_refuses_registry_data_on_fresh_facts(lab: Cluster, kubeadm_config: None) -> None:
    ctx = Ctx(lab)
    ctx.transport("master01").on(("test",), exit_status=1)
    ctx.transport("etcd01").on(re.compile("get /registry"), stdout='{"count": 7}')
    with pytest.raises(PlanError, match="7 /registry keys"):
        await step_args(InitControlPlane, host="master01").run(ctx)
    assert not any(a[:2] == ("kubeadm", "init") for a in ctx.argvs("master01"))


async def test_init_keeps_key_and_token_in_memory_only(lab: Cluster, kubeadm_config: None, ca: pki.CertKey) -> None:
    ctx = Ctx(lab)
    m = ctx.transport("master01")
    m.on(("test",), exit_status=1)
    m.on(("install",))
    ctx.transport("etcd01").on(re.compile("get /registry"), stdout='{"count": 0}')
    out = (f"[upload-certs] Using certificate key:\n{KEY}\n...\n"
           f"kubeadm join k8s-api.lab:6443 --token {TOKEN} \\\n"
           f"  --discovery-token-ca-cert-hash {pki.spki_sha256(ca.cert)} --control-plane --certificate-key {KEY}\n")
    m.on(("systemctl", "enable", "kubelet"))
    m.on(("kubeadm", "init"), stdout=out)
    m.on(("test", "-e", APISERVER_MANIFEST))  # written by the init
    m.on(("systemctl", "is-active", "kubelet"), stdout="active\n")
    m.on(re.compile("/readyz"), stdout="ok")
    await step_args(InitControlPlane, host="master01").run(ctx)
    init = next(c for c in m.calls if c.argv[:2] == ("kubeadm", "init"))
    # F1/H2: real kubeadm refuses --certificate-key next to --config; the key is in the file
    assert init.argv == ("kubeadm", "init", "--config", cmd.KUBEADM_INIT_CONFIG, "--upload-certs")
    assert m.files[cmd.KUBEADM_CONFIG][1] == 0o600
    key = ctx.secrets.certificate_key
    assert key is not None and re.fullmatch(r"[0-9a-f]{64}", key.reveal())
    assert all(key.reveal() not in c.wire for c in m.calls)  # made by hactl, never on a command line
    data, mode = m.files[cmd.KUBEADM_INIT_CONFIG]
    assert mode == 0o600 and f"certificateKey: {key.reveal()}" in data.decode()
    assert ("rm", "-f", cmd.KUBEADM_INIT_CONFIG) in ctx.argvs("master01")
    assert ctx.secrets.bootstrap_token is not None and ctx.secrets.bootstrap_token.reveal() == TOKEN
    assert ctx.secrets.ca_cert_hash == pki.spki_sha256(ca.cert)
    assert KEY not in repr(ctx.events) and TOKEN not in repr(ctx.events)


async def test_control_plane_join_refreshes_key_and_masks_secrets(
        lab: Cluster, kubeadm_config: None, ca: pki.CertKey) -> None:
    ctx = Ctx(lab)
    via = ctx.transport("master01")
    via.on(("kubeadm", "token", "create"), stdout=f"{TOKEN}\n")
    via.on(("kubeadm", "init", "phase", "upload-certs"),
           stdout=f"[upload-certs] Storing the certificates in Secret \"kubeadm-certs\"\n[upload-certs] Using certificate key:\n{KEY}\n")
    via.on(("cat", cmd.K8S_CA_CERT), stdout=ca.cert_pem().decode())
    via.on(("kubectl",), stdout=node_json("master02", True))
    joiner = ctx.transport("master02")
    joiner.on(("test",), exit_status=1)
    joiner.on(("systemctl", "enable", "kubelet"))
    joiner.on(("kubeadm", "join"), stdout="This node has joined the cluster")
    await step_args(JoinControlPlane, host="master02", via="master01").run(ctx)
    join = next(c for c in joiner.calls if c.argv[:2] == ("kubeadm", "join"))
    assert join.argv == ("kubeadm", "join", "--config", cmd.KUBEADM_JOIN_CONFIG)
    assert all(TOKEN not in c.wire and KEY not in c.wire for c in joiner.calls)
    data, mode = joiner.files[cmd.KUBEADM_JOIN_CONFIG]  # the fake keeps it; the host's rm -f ran
    assert mode == 0o600 and TOKEN in data.decode() and f"certificateKey: {KEY}" in data.decode()
    assert ("rm", "-f", cmd.KUBEADM_JOIN_CONFIG) in ctx.argvs("master02")
    assert KEY not in repr(ctx.events) and TOKEN not in repr(ctx.events)
    # a second join in the same run reuses the fresh key (one key per join batch)
    joiner3 = ctx.transport("master03")
    joiner3.on(("test",), exit_status=1)
    joiner3.on(("systemctl", "enable", "kubelet"))
    joiner3.on(("kubeadm", "join"))
    via.on(("kubectl",), stdout=node_json("master03", True))
    await step_args(JoinControlPlane, host="master03", via="master01").run(ctx)
    uploads = [a for a in ctx.argvs("master01") if a[:4] == ("kubeadm", "init", "phase", "upload-certs")]
    assert len(uploads) == 1


async def test_worker_join_is_idempotent(lab: Cluster) -> None:
    ctx = Ctx(lab)
    ctx.transport("worker01").on(("test", "-e"))
    await step_args(JoinWorker, host="worker01", via="master01").run(ctx)
    assert ctx.argvs("worker01") == [("test", "-e", "/etc/kubernetes/kubelet.conf")]
    assert "master01" not in ctx.fakes


def test_command_builders() -> None:
    from hactl.sensitive import Sensitive

    assert cmd.kubeadm_join() == ("kubeadm", "join", "--config", cmd.KUBEADM_JOIN_CONFIG)
    assert not any(isinstance(a, Sensitive) for a in cmd.kubeadm_init() + cmd.kubeadm_join())
    argv = cmd.member_add("https://a:2379", "etcd04", "https://b:2380")
    assert argv[0] == "etcdctl" and "--endpoints=https://a:2379" in argv and argv[-1] == "--learner"
    assert cmd.upload_certs() == ("kubeadm", "init", "phase", "upload-certs", "--upload-certs",
                                  "--config", cmd.KUBEADM_CONFIG)


def test_desired_files_come_from_the_renderers(lab: Cluster) -> None:
    config = desired.kubeadm_init_config(lab, lab.masters[0])
    assert "controlPlaneEndpoint: k8s-api.lab:6443" in config
    assert "certificateKey" not in config  # the init config holds no secret
    env = desired.etcd_env(lab, "etcd03", state="existing", members=lab.etcd_members)
    assert 'ETCD_INITIAL_CLUSTER_STATE="existing"' in env


async def test_rejoin_resets_only_while_the_node_is_missing(lab: Cluster, ca: pki.CertKey) -> None:
    ctx = Ctx(lab)
    via = ctx.transport("master01")
    via.on(("kubectl",), exit_status=1, stderr='nodes "worker02" not found')
    via.on(("kubeadm", "token", "create"), stdout=f"{TOKEN}\n")
    via.on(("cat", cmd.K8S_CA_CERT), stdout=ca.cert_pem().decode())
    w = ctx.transport("worker02")
    w.on(("kubeadm", "reset"))
    w.on(("systemctl", "enable", "kubelet"))
    w.on(("kubeadm", "join"),
         respond=lambda _c: (via.on(("kubectl",), stdout=node_json("worker02", False)), Result(0, "", ""))[1])
    await step_args(JoinWorker, host="worker02", via="master01", reset_first=True).run(ctx)
    assert [a[:2] for a in ctx.argvs("worker02")] == [
        ("kubeadm", "reset"), ("systemctl", "enable"), ("kubeadm", "join"), ("rm", "-f")]
    again = Ctx(lab)
    again.transport("master01").on(("kubectl",), stdout=node_json("worker02", False))
    await step_args(JoinWorker, host="worker02", via="master01", reset_first=True).run(again)
    assert again.argvs("worker02") == []


async def test_stacked_join_waits_for_a_settled_etcd(lab: Cluster, ca: pki.CertKey) -> None:
    stacked = load_file(str(ROOT / "specs" / "stacked.yaml")).cluster
    ctx = Ctx(stacked)
    via = ctx.transport("master01")
    state = {"lists": 0}

    def listing(_call: Call) -> Result:
        state["lists"] += 1
        learner = state["lists"] < 3  # master02 is still a learner at first
        return Result(0, members_json((1, "master01", "https://198.18.2.11:2380", False),
                                      (2, "master02", "https://198.18.2.12:2380", learner)), "")

    via.on(re.compile("member list"), respond=listing)
    health = [{"endpoint": f"https://198.18.2.1{i}:2379", "health": True} for i in (1, 2)]
    via.on(re.compile("endpoint health"), stdout=json.dumps(health))
    via.on(("kubeadm", "token", "create"), stdout=f"{TOKEN}\n")
    via.on(("kubeadm", "init", "phase", "upload-certs"), stdout=f"{KEY}\n")
    via.on(("cat", cmd.K8S_CA_CERT), stdout=ca.cert_pem().decode())
    via.on(("kubectl",), stdout=node_json("master03", True))
    m3 = ctx.transport("master03")
    m3.on(("test",), exit_status=1)
    m3.on(("systemctl", "enable", "kubelet"))
    m3.on(("kubeadm", "join"))
    await step_args(JoinControlPlane, host="master03", via="master01", stacked_etcd=True).run(ctx)
    assert state["lists"] >= 4  # healthy, then healthy again after the strict-reconfig window
    calls = ctx.argvs("master01")
    assert calls.index(next(a for a in calls if "list" in a)) < len(calls)
    assert any(a[:2] == ("kubeadm", "join") for a in ctx.argvs("master03"))


def test_initial_cluster_of_a_joining_member_lists_every_current_member(lab: Cluster) -> None:
    from hactl.plan.etcd_ops import initial_cluster, parse_member_list

    listed = parse_member_list(members_json(
        *THREE[:2], (9, "", "https://198.18.0.23:2380", True),  # etcd03 added, not started
        (4, "old04", "https://198.18.0.24:2380", False)))  # a member outside the spec
    assert initial_cluster(Ctx(lab), listed, lab.host("etcd03")) == (
        "etcd01=https://198.18.0.21:2380,etcd02=https://198.18.0.22:2380,"
        "old04=https://198.18.0.24:2380,etcd03=https://198.18.0.23:2380")


def test_token_and_key_freshness(lab: Cluster) -> None:
    from hactl.plan import join_ops
    from hactl.sensitive import Sensitive

    ctx = Ctx(lab)
    assert not join_ops.key_is_fresh(ctx) and not join_ops.token_is_fresh(ctx)
    join_ops.remember_key(ctx, Sensitive(KEY))
    join_ops.remember_token(ctx, Sensitive(TOKEN))
    made = ctx.secrets.certificate_key_uploaded_at
    assert made is not None
    assert join_ops.key_is_fresh(ctx, now=made + 60 * 60)
    assert not join_ops.key_is_fresh(ctx, now=made + 80 * 60)  # 2 h TTL minus a 45 min margin
    assert not join_ops.token_is_fresh(ctx, now=made + 61 * 60)
    assert join_ops.parse_certificate_key(f"[upload-certs] Using certificate key:\n{KEY}\n") == Sensitive(KEY)
    assert join_ops.parse_token(f"kubeadm join lb:6443 --token {TOKEN} \\") == Sensitive(TOKEN)
