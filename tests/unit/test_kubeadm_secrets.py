"""H2 / F1: the bootstrap token and the certificate key never travel on a remote command line.

``kubeadm init --config F --upload-certs`` (real kubeadm >= 1.15 refuses ``--certificate-key``
next to ``--config``) with the key in F's ``InitConfiguration.certificateKey``; ``kubeadm join
--config F`` with the token, CA pin and ``controlPlane.certificateKey`` in F's JoinConfiguration.
F is written 0600 through stdin, exists only while kubeadm runs, and is removed also when kubeadm
fails or the apply is cancelled. The long-lived /etc/hactl/kubeadm-config.yaml that ``kubeadm init
phase upload-certs --config`` reuses never holds a key (kubeadm would re-upload under it instead
of making a fresh one). Steps run against hactl's FakeTransport, which records every command line
exactly as the wire would carry it (secrets revealed) and every file written.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from stepctx import Ctx

from hactl.errors import CommandError
from hactl.plan import commands as cmd
from hactl.plan import remote
from hactl.plan.output import render_json, render_text
from hactl.plan.planner import build_plan
from hactl.plan.steps import InitControlPlane, JoinControlPlane, JoinWorker
from hactl.plan.steps.complete_init import APISERVER_MANIFEST
from hactl.plan.synthetic import PROBED_AT, Synthetic
from hactl.render import etcd_pki, pki
from hactl.render import kubeadm_config as kc
from hactl.sensitive import MASK, Sensitive
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.transport.base import Command, Result, secrets_of
from hactl.transport.fake import Call, FakeTransport

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "abcdef.0123456789abcdef"
KEY = "0123456789abcdef" * 4
REAL_SLEEP = asyncio.sleep  # the autouse fixture below replaces asyncio.sleep with a no-op


@pytest.fixture(scope="module")
def lab() -> Cluster:
    return load_file(str(ROOT / "specs" / "lab.yaml")).cluster


@pytest.fixture(scope="module")
def ca() -> pki.CertKey:
    return etcd_pki.make_etcd_ca(key_type="ecdsa")


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_sleep(_seconds: float) -> None:
        return None

    monkeypatch.setattr(remote.asyncio, "sleep", no_sleep)


@dataclass
class Host(FakeTransport):
    """A FakeTransport whose files behave like a host's: ``rm -f`` removes them, and each
    kubeadm call records which files existed (path → (content, mode)) while it ran."""

    seen: list[tuple[tuple[str, ...], dict[str, tuple[bytes, int]]]] = field(default_factory=list)
    hold: asyncio.Event | None = None
    """When set, a ``kubeadm`` call waits for it (a long-running join, for cancellation)."""

    async def run(self, command: Command, **kw: Any) -> Result:
        if not isinstance(command, str) and command[:2] == ("rm", "-f"):
            self.files.pop(str(command[2]), None)
        if not isinstance(command, str) and command[:1] == ("kubeadm",):
            self.seen.append((tuple(str(a) for a in command), dict(self.files)))
            if self.hold is not None:
                await self.hold.wait()
        return await super().run(command, **kw)


def host(ctx: Ctx, name: str) -> Host:
    return ctx.fakes.setdefault(name, Host(name))  # type: ignore[return-value]


def no_secret_on_any_command_line(ctx: Ctx, *secrets: str) -> None:
    for fake in ctx.fakes.values():
        for call in fake.calls:
            assert MASK not in call.argv, f"{fake.host}: a Sensitive argv item: {call.argv}"
            for secret in secrets:
                assert secret not in call.wire, f"{fake.host}: a secret on the wire: {call.argv}"


def file_at_kubeadm(h: Host, path: str) -> tuple[dict[str, Any], int]:
    (argv, files), = [(a, f) for a, f in h.seen if a[:2] in {("kubeadm", "init"), ("kubeadm", "join")}]
    assert path in files, f"{path} did not exist while {argv} ran"
    data, mode = files[path]
    docs = {d["kind"]: d for d in yaml.safe_load_all(data.decode())}
    return docs, mode


# -- kubeadm init --------------------------------------------------------------------------


def init_world(ctx: Ctx, *, init: Result) -> Host:
    m = host(ctx, "master01")
    m.on(("test",), exit_status=1)
    m.on(("install",))
    m.on(("rm", "-f"))
    m.on(("systemctl", "enable", "kubelet"))
    m.on(("kubeadm", "init"), respond=lambda _c: init)
    m.on(("test", "-e", APISERVER_MANIFEST))  # written by the init
    m.on(("systemctl", "is-active", "kubelet"), stdout="active\n")
    m.on(re.compile("/readyz"), stdout="ok")
    host(ctx, "etcd01").on(re.compile("get /registry"), stdout='{"count": 0}')
    return m


def init_output(ca: pki.CertKey, key: str) -> str:
    return (f"[upload-certs] Using certificate key:\n{key}\n...\n"
            f"kubeadm join k8s-api.lab:6443 --token {TOKEN} \\\n"
            f"  --discovery-token-ca-cert-hash {pki.spki_sha256(ca.cert)} "
            f"--control-plane --certificate-key {key}\n")


async def test_init_runs_config_and_upload_certs_only_with_the_key_in_a_0600_file(
        lab: Cluster, ca: pki.CertKey, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("secrets.token_hex", lambda n: KEY[: 2 * n])
    ctx = Ctx(lab)
    m = init_world(ctx, init=Result(0, init_output(ca, KEY), ""))
    await InitControlPlane(id="i", host="master01", title="t", reason="r").run(ctx)

    init = next(c for c in m.calls if c.argv[:2] == ("kubeadm", "init"))
    assert init.argv == ("kubeadm", "init", "--config", cmd.KUBEADM_INIT_CONFIG, "--upload-certs")
    no_secret_on_any_command_line(ctx, KEY, TOKEN)
    docs, mode = file_at_kubeadm(m, cmd.KUBEADM_INIT_CONFIG)
    assert mode == 0o600
    assert docs["InitConfiguration"]["certificateKey"] == KEY
    assert docs["InitConfiguration"]["apiVersion"] == "kubeadm.k8s.io/v1beta3"  # Kubernetes 1.30
    assert docs["ClusterConfiguration"]["controlPlaneEndpoint"] == "k8s-api.lab:6443"
    assert cmd.KUBEADM_INIT_CONFIG not in m.files  # removed after init
    rm = m.calls.index(next(c for c in m.calls if c.argv == ("rm", "-f", cmd.KUBEADM_INIT_CONFIG)))
    assert rm > m.calls.index(init)
    # the long-lived file that upload-certs reuses holds no key
    kept, kept_mode = m.files[cmd.KUBEADM_CONFIG]
    assert kept_mode == 0o600 and b"certificateKey" not in kept and KEY.encode() not in kept
    assert ctx.secrets.certificate_key == Sensitive(KEY)
    assert KEY not in repr(ctx.events) and TOKEN not in repr(ctx.events)


async def test_a_failed_init_removes_the_key_file_and_masks_the_key(lab: Cluster) -> None:
    ctx = Ctx(lab)
    m = init_world(ctx, init=Result(0, "", ""))

    def failing(_call: Call) -> Result:  # echoes the key it read from the file
        key = next(yaml.safe_load_all(m.files[cmd.KUBEADM_INIT_CONFIG][0]))["certificateKey"]
        return Result(1, "", f"error: certificate key {key} refused\n")

    m.on(("kubeadm", "init"), respond=failing)
    with pytest.raises(CommandError) as info:
        await InitControlPlane(id="i", host="master01", title="t", reason="r").run(ctx)
    assert "certificate key (sensitive value) refused" in str(info.value) + str(info.value.stderr)
    assert not re.search(r"[0-9a-f]{64}", str(info.value) + str(info.value.stderr))
    assert cmd.KUBEADM_INIT_CONFIG not in m.files
    assert ctx.secrets.certificate_key is None


# -- kubeadm join --------------------------------------------------------------------------


def join_world(ctx: Ctx, ca: pki.CertKey, name: str, *, control_plane: bool,
               join: Result | None = None) -> Host:
    via = host(ctx, "master01")
    via.on(("kubeadm", "token", "create"), stdout=f"{TOKEN}\n")
    via.on(("kubeadm", "init", "phase", "upload-certs"),
           stdout=f"[upload-certs] Using certificate key:\n{KEY}\n")
    via.on(("cat", cmd.K8S_CA_CERT), stdout=ca.cert_pem().decode())
    via.on(("rm", "-f"))
    labels = {"node-role.kubernetes.io/control-plane": ""} if control_plane else {}
    via.on(("kubectl",), stdout=json.dumps({"metadata": {"name": name, "labels": labels}}))
    via.on(re.compile("/readyz"), stdout="ok")
    joiner = host(ctx, name)
    joiner.on(("test",), exit_status=1)
    joiner.on(("systemctl", "enable", "kubelet"))
    joiner.on(("rm", "-f"))
    joiner.on(("kubeadm", "join"), respond=lambda _c: join or Result(0, "This node has joined", ""))
    return joiner


async def test_worker_join_reads_token_pin_and_node_from_a_0600_join_config(
        lab: Cluster, ca: pki.CertKey) -> None:
    ctx = Ctx(lab)
    w = join_world(ctx, ca, "worker01", control_plane=False)
    await JoinWorker(id="j", host="worker01", title="t", reason="r", via="master01").run(ctx)

    join = next(c for c in w.calls if c.argv[:2] == ("kubeadm", "join"))
    assert join.argv == ("kubeadm", "join", "--config", cmd.KUBEADM_JOIN_CONFIG)
    no_secret_on_any_command_line(ctx, TOKEN)
    docs, mode = file_at_kubeadm(w, cmd.KUBEADM_JOIN_CONFIG)
    assert mode == 0o600
    assert docs["JoinConfiguration"] == {
        "apiVersion": "kubeadm.k8s.io/v1beta3",
        "kind": "JoinConfiguration",
        "discovery": {"bootstrapToken": {"apiServerEndpoint": "k8s-api.lab:6443", "token": TOKEN,
                                         "caCertHashes": [pki.spki_sha256(ca.cert)]}},
        "nodeRegistration": {"name": "worker01", "kubeletExtraArgs": {"node-ip": "198.18.0.31"}},
    }
    assert cmd.KUBEADM_JOIN_CONFIG not in w.files


async def test_control_plane_join_is_made_by_the_control_plane_stanza_alone(
        lab: Cluster, ca: pki.CertKey) -> None:
    ctx = Ctx(lab)
    m2 = join_world(ctx, ca, "master02", control_plane=True)
    await JoinControlPlane(id="j", host="master02", title="t", reason="r", via="master01").run(ctx)

    join = next(c for c in m2.calls if c.argv[:2] == ("kubeadm", "join"))
    assert join.argv == ("kubeadm", "join", "--config", cmd.KUBEADM_JOIN_CONFIG)  # no --control-plane
    no_secret_on_any_command_line(ctx, TOKEN, KEY)
    docs, mode = file_at_kubeadm(m2, cmd.KUBEADM_JOIN_CONFIG)
    doc = docs["JoinConfiguration"]
    assert mode == 0o600
    assert doc["controlPlane"] == {
        "localAPIEndpoint": {"advertiseAddress": "198.18.0.12", "bindPort": 6443},
        "certificateKey": KEY,
    }
    assert doc["discovery"]["bootstrapToken"]["token"] == TOKEN
    assert doc["nodeRegistration"] == {"name": "master02", "kubeletExtraArgs": {"node-ip": "198.18.0.12"}}
    assert cmd.KUBEADM_JOIN_CONFIG not in m2.files
    # upload-certs reuses the long-lived config, which holds no key: kubeadm makes a fresh one
    upload = next(c for c in ctx.fakes["master01"].calls if c.argv[:4] == (
        "kubeadm", "init", "phase", "upload-certs"))
    assert upload.argv == cmd.upload_certs()
    kept = ctx.fakes["master01"].files[cmd.KUBEADM_CONFIG][0]
    assert b"certificateKey" not in kept


async def test_a_failed_join_removes_the_file_and_masks_what_kubeadm_echoes(
        lab: Cluster, ca: pki.CertKey) -> None:
    ctx = Ctx(lab)
    m2 = join_world(ctx, ca, "master02", control_plane=True,
                    join=Result(1, "", f"token {TOKEN} key {KEY}: cipher: message authentication failed\n"))
    with pytest.raises(CommandError) as info:
        await JoinControlPlane(id="j", host="master02", title="t", reason="r", via="master01").run(ctx)
    text = f"{info.value} {info.value.stderr} {info.value.argv}"
    assert "message authentication failed" in text
    assert TOKEN not in text and KEY not in text
    assert cmd.KUBEADM_JOIN_CONFIG not in m2.files
    assert ("rm", "-f", cmd.KUBEADM_JOIN_CONFIG) in [c.argv for c in m2.calls]


async def test_a_cancelled_join_still_removes_the_file(lab: Cluster, ca: pki.CertKey) -> None:
    ctx = Ctx(lab)
    w = join_world(ctx, ca, "worker01", control_plane=False)
    w.hold = asyncio.Event()  # kubeadm join "runs" until cancelled
    task = asyncio.ensure_future(
        JoinWorker(id="j", host="worker01", title="t", reason="r", via="master01").run(ctx))
    for _ in range(1000):
        if w.seen:
            break
        await REAL_SLEEP(0)
    assert cmd.KUBEADM_JOIN_CONFIG in w.files
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cmd.KUBEADM_JOIN_CONFIG not in w.files


async def test_a_removal_that_fails_is_logged_and_never_hides_the_join_error(
        lab: Cluster, ca: pki.CertKey) -> None:
    ctx = Ctx(lab)
    w = join_world(ctx, ca, "worker01", control_plane=False, join=Result(1, "", "preflight failed\n"))
    w.on(("rm", "-f"), exit_status=1, stderr="rm: Read-only file system")
    with pytest.raises(CommandError, match="preflight failed"):
        await JoinWorker(id="j", host="worker01", title="t", reason="r", via="master01").run(ctx)
    assert ("secret file not removed; remove it by hand",
            {"path": cmd.KUBEADM_JOIN_CONFIG, "problem": "rm: Read-only file system"}) in ctx.events


# -- builders and plans --------------------------------------------------------------------


def test_no_kubeadm_command_builder_takes_a_secret() -> None:
    for argv in (cmd.kubeadm_init(), cmd.kubeadm_join(), cmd.upload_certs(), cmd.token_create(),
                 cmd.kubeadm_reset()):
        assert secrets_of(argv) == ()
        given = {a for a in argv if isinstance(a, str) and a.startswith("--")}
        # real kubeadm: nothing but its allow-list next to --config
        assert not given & {"--certificate-key", "--token", "--control-plane",
                            "--discovery-token-ca-cert-hash"}
    assert cmd.KUBEADM_INIT_CONFIG == kc.INIT_SECRET_CONFIG_PATH
    assert cmd.KUBEADM_JOIN_CONFIG == kc.JOIN_CONFIG_PATH
    assert cmd.KUBEADM_CONFIG == kc.INIT_CONFIG_PATH


def test_plan_text_and_json_show_the_join_and_init_commands_with_secrets_masked(lab: Cluster) -> None:
    plan = build_plan(lab, Synthetic(lab).observed(), now=PROBED_AT)
    data = json.loads(render_json(plan))
    by_kind: dict[str, list[str]] = {}
    for step in data["steps"]:
        by_kind.setdefault(step["kind"], step["commands"])
    init = by_kind["init_control_plane"]
    assert f"kubeadm init --config {cmd.KUBEADM_INIT_CONFIG} --upload-certs" in init
    assert any(c.startswith(f"put {cmd.KUBEADM_INIT_CONFIG} 0600") and f"certificateKey: {MASK}" in c
               for c in init)
    for kind, extra in (("join_worker", ""), ("join_control_plane", f"certificateKey: {MASK}")):
        commands = by_kind[kind]
        assert f"kubeadm join --config {cmd.KUBEADM_JOIN_CONFIG}" in commands
        put = next(c for c in commands if c.startswith(f"put {cmd.KUBEADM_JOIN_CONFIG} 0600"))
        assert f"token: {MASK}" in put and extra in put
        assert f"rm -f {cmd.KUBEADM_JOIN_CONFIG}  # also when the join fails" in commands
    shown = render_json(plan) + render_text(plan)
    for flag in ("--token", "--certificate-key", "--control-plane", "--discovery-token-ca-cert-hash"):
        assert flag not in shown


def test_renderer_refuses_malformed_keys_and_tokens(lab: Cluster) -> None:
    with pytest.raises(ValueError, match="32 random bytes"):
        kc.init_secret_config_file(lab, Sensitive("ab" * 16))  # 16 bytes: real kubeadm refuses
    creds = kc.JoinCredentials(Sensitive("abcdef.0123456789abcdef\nkind: x"), ("sha256:" + "0" * 64,))
    with pytest.raises(ValueError, match="bootstrap token"):
        kc.join_configuration(lab, "worker01", creds)
