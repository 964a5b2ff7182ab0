"""Safety rules 5 and 6 (docs/safety.md) for control-plane joins: the certificate key and the
token are checked before every join and made afresh when too old (controlled clock); a join runs
only while the first master's /readyz answers through the load balancer, also when that master
was initialised in an earlier run. Steps run against hactl's FakeTransport."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from stepctx import Ctx

from hactl.diff import CERTIFICATE_KEY_MARGIN, CERTIFICATE_KEY_TTL
from hactl.errors import CommandError
from hactl.plan import commands as cmd
from hactl.plan import desired, join_ops, remote
from hactl.plan.planner import build_plan
from hactl.plan.steps import JoinControlPlane
from hactl.plan.synthetic import PROBED_AT, Synthetic
from hactl.render import etcd_pki, pki
from hactl.sensitive import Sensitive
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.transport.base import Result
from hactl.transport.fake import Call

ROOT = Path(__file__).resolve().parents[2]
TOKENS = ["aaaaaa.0123456789abcdef", "bbbbbb.0123456789abcdef", "cccccc.0123456789abcdef"]
KEYS = ["a" * 64, "b" * 64, "c" * 64]
UPLOAD = ("kubeadm", "init", "phase", "upload-certs")
NOT_READY = ('Error from server (InternalError): an error on the server ("[-]etcd failed: reason '
             'withheld\\nreadyz check failed") has prevented the request from succeeding')




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
    monkeypatch.setattr(desired, "kubeadm_init_config", lambda cluster, host: "kind: InitConfiguration\n")


@pytest.fixture()
def now(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The join_ops clock, moved by the test (seconds)."""
    t = [10_000.0]
    monkeypatch.setattr(join_ops, "clock", lambda: t[0])
    return t


class Cluster3:
    """master01 (initialised) answers; each step appends what ran, in order, to ``log``."""

    def __init__(self, ctx: Ctx, ca: pki.CertKey, *, ready: list[bool] | None = None) -> None:
        self.ctx = ctx
        self.log: list[str] = []
        self.ready = list(ready or [])
        self.tokens, self.keys = iter(TOKENS), iter(KEYS)
        via = ctx.transport("master01")
        via.on(("kubectl",), respond=self._node)
        via.on(re.compile("/readyz"), respond=self._readyz)
        via.on(("kubeadm", "token", "create"), respond=self._token)
        via.on(UPLOAD, respond=self._upload)
        via.on(("cat", cmd.K8S_CA_CERT), stdout=ca.cert_pem().decode())
        for name in ("master02", "master03"):
            joiner = ctx.transport(name)
            joiner.on(("test",), exit_status=1)
            joiner.on(("systemctl", "enable", "kubelet"))
            joiner.on(("kubeadm", "join"), respond=self._join(name))
        self.joined: set[str] = set()

    def _readyz(self, _call: Call) -> Result:
        ok = self.ready.pop(0) if self.ready else True
        self.log.append("readyz ok" if ok else "readyz failed")
        return Result(0, "ok", "") if ok else Result(1, "", NOT_READY)

    def _token(self, _call: Call) -> Result:
        token = next(self.tokens)
        self.log.append(f"token {token[:6]}")
        return Result(0, f"{token}\n", "")

    def _upload(self, call: Call) -> Result:
        key = next(self.keys)
        self.log.append(f"upload {key[:1]}" + (" --config" if "--config" in call.argv else ""))
        return Result(0, f"[upload-certs] Using certificate key:\n{key}\n", "")

    def _join(self, name: str) -> Callable[[Call], Result]:
        def respond(call: Call) -> Result:
            assert call.argv == cmd.kubeadm_join()  # the token and key are in the 0600 file
            config = self.ctx.transport(name).files[cmd.KUBEADM_JOIN_CONFIG][0].decode()
            token = next(t for t in TOKENS if t in config)
            key = next(k for k in KEYS if k in config)
            self.log.append(f"join {name} token {token[:6]} key {key[:1]}")
            self.joined.add(name)
            return Result(0, "This node has joined the cluster", "")
        return respond

    def _node(self, call: Call) -> Result:
        name = call.argv[-3]  # kubectl … get node NAME -o json
        if name not in self.joined:
            return Result(1, "", f'Error from server (NotFound): nodes "{name}" not found')
        return Result(0, json.dumps({"metadata": {"name": name, "labels": {
            "node-role.kubernetes.io/control-plane": ""}}}), "")


def join(host: str) -> JoinControlPlane:
    return JoinControlPlane(id=f"master[{host}].join", host=host, title="t", reason="r", via="master01")


# -- rule 5: certificate key and token re-checked before every join ------------------------


async def test_key_and_token_too_old_at_the_second_join_are_made_again_first(
        lab: Cluster, ca: pki.CertKey, now: list[float]) -> None:
    ctx = Ctx(lab)
    world = Cluster3(ctx, ca)
    await join("master02").run(ctx)
    # master02's join took long: the key is now older than TTL minus margin, the token > 1 h
    now[0] += CERTIFICATE_KEY_TTL - CERTIFICATE_KEY_MARGIN + 1
    await join("master03").run(ctx)
    assert world.log == [
        "readyz ok", "token aaaaaa", "upload a --config", "join master02 token aaaaaa key a",
        "readyz ok", "token bbbbbb", "upload b --config", "join master03 token bbbbbb key b",
    ]
    assert all(k not in repr(ctx.events) for k in KEYS) and all(t not in repr(ctx.events) for t in TOKENS)


async def test_key_still_fresh_is_kept_and_a_token_is_renewed_alone(
        lab: Cluster, ca: pki.CertKey, now: list[float]) -> None:
    ctx = Ctx(lab)
    world = Cluster3(ctx, ca)
    await join("master02").run(ctx)
    now[0] += join_ops.TOKEN_MAX_AGE + 1  # 61 min: the token is stale, the key (75 min limit) is not
    assert CERTIFICATE_KEY_TTL - CERTIFICATE_KEY_MARGIN > join_ops.TOKEN_MAX_AGE + 1
    await join("master03").run(ctx)
    assert world.log[4:] == ["readyz ok", "token bbbbbb", "join master03 token bbbbbb key a"]


async def test_key_one_second_short_of_the_limit_is_reused(
        lab: Cluster, ca: pki.CertKey, now: list[float]) -> None:
    ctx = Ctx(lab)
    world = Cluster3(ctx, ca)
    join_ops.remember_key(ctx, Sensitive(KEYS[2]))  # e.g. made by kubeadm init
    now[0] += CERTIFICATE_KEY_TTL - CERTIFICATE_KEY_MARGIN - 1
    join_ops.remember_token(ctx, Sensitive(TOKENS[2]))  # a fresh token: only the key ages
    await join("master02").run(ctx)
    now[0] += 2
    await join("master03").run(ctx)
    assert world.log == ["readyz ok", "join master02 token cccccc key c",
                         "readyz ok", "upload a --config", "join master03 token cccccc key a"]


# -- rule 6: joins only while the first master's /readyz answers through the LB -------------


async def test_join_waits_while_readyz_fails(lab: Cluster, ca: pki.CertKey, now: list[float]) -> None:
    ctx = Ctx(lab)
    world = Cluster3(ctx, ca, ready=[False, False, True])
    await join("master02").run(ctx)
    assert world.log[:4] == ["readyz failed", "readyz failed", "readyz ok", "token aaaaaa"]
    assert world.log[-1] == "join master02 token aaaaaa key a"
    readyz = next(c for c in ctx.transport("master01").calls if "/readyz" in c.wire)
    assert readyz.argv == cmd.readyz()  # through admin.conf, whose server is the load balancer


async def test_join_never_runs_while_readyz_keeps_failing(
        lab: Cluster, ca: pki.CertKey, now: list[float], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(join_ops, "READY_TIMEOUT", 0.0)
    ctx = Ctx(lab)
    world = Cluster3(ctx, ca, ready=[False] * 10)
    with pytest.raises(CommandError, match=r"/readyz of the first master.*readyz check failed") as info:
        await join("master02").run(ctx)
    assert info.value.transient  # the engine retries the step later
    assert world.log == ["readyz failed"]  # no token, no key, no join
    assert not any(c.argv[:2] == ("kubeadm", "join") for c in ctx.transport("master02").calls)


async def test_first_join_after_an_earlier_init_checks_readyz_first(
        lab: Cluster, ca: pki.CertKey, now: list[float]) -> None:
    # master01 was initialised by an earlier run: this plan has no init step waiting for /readyz
    observed = Synthetic(lab).etcd().lb().init().observed()
    plan = build_plan(lab, observed, now=PROBED_AT)
    steps = {s.id: s for s in plan.steps()}
    assert "master[master01].init" not in steps
    first = steps["master[master02].join"]
    assert isinstance(first, JoinControlPlane) and first.via == "master01"
    assert "wait for /readyz of the first master through the load balancer" in first.commands()
    ctx = Ctx(lab)
    world = Cluster3(ctx, ca, ready=[False, True])
    await first.run(ctx)
    assert world.log[:2] == ["readyz failed", "readyz ok"]
    assert world.log[-1] == "join master02 token aaaaaa key a"
