"""A master's server left in DRAIN or MAINT at runtime (a drill or an apply killed between its
``state drain`` and ``state ready``) is a difference like any other: the plan puts it back in
rotation, and a server that follows another (``MAINT (via …)``) or is DOWN by its health checks
is not hactl's to change."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
from stepctx import Ctx

from hactl.diff import Op, diff
from hactl.errors import CommandError
from hactl.facts.model import BackendServer
from hactl.plan import commands as cmd
from hactl.plan import desired
from hactl.plan.output import render_text
from hactl.plan.planner import build_plan
from hactl.plan.steps.configure_haproxy import ConfigureHAProxy
from hactl.plan.synthetic import PROBED_AT, Synthetic
from hactl.spec.load import load_file
from hactl.spec.models import Cluster

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lab() -> Cluster:
    return load_file(str(ROOT / "specs" / "lab.yaml")).cluster


def _servers(lab: Cluster, **status: str) -> Synthetic:
    s = Synthetic(lab).converged()
    facts = s.hosts["lb01"].haproxy
    assert facts is not None
    servers = tuple(
        BackendServer("k8s-api-backend", m.name, status.get(m.name, "UP").split(" ")[0],  # type: ignore[arg-type]
                      raw_status=status.get(m.name, "UP 3/3"))
        for m in lab.masters)
    return s._set("lb01", haproxy=replace(facts, servers=servers))


def test_a_drained_master_is_planned_back_in_rotation(lab: Cluster) -> None:
    obs = _servers(lab, master02="DRAIN").observed()
    changes = diff(lab, obs, now=PROBED_AT).effective()
    assert [(c.address, c.op) for c in changes] == [("lb[lb01].service", Op.UPDATE)]
    change = changes[0]
    assert change.detail.servers == ("master02",)
    assert change.before == {"active": True, "held_out": ["master02"]}
    assert change.reason == ("master02 held out of k8s-api-backend at runtime (master02 DRAIN: a "
                             "drill or an apply stopped between drain and ready); put back in "
                             "rotation (state ready)")
    plan = build_plan(lab, obs, now=PROBED_AT)
    [step] = [s for s in plan.graph.order() if s.host == "lb01"]
    assert isinstance(step, ConfigureHAProxy) and step.ready_servers == ("master02",)
    assert "master02 held out of k8s-api-backend" in render_text(plan)
    assert any("set server k8s-api-backend/master02 state ready" in c for c in step.commands())


def test_maint_set_by_hand_counts_but_not_via_tracking_or_down(lab: Cluster) -> None:
    obs = _servers(lab, master01="MAINT", master02="MAINT (via k8s-api-backend/master01)",
                   master03="DOWN 1/2").observed()
    [change] = diff(lab, obs, now=PROBED_AT).effective()
    assert change.detail.servers == ("master01",)


def test_all_up_plans_nothing(lab: Cluster) -> None:
    assert diff(lab, _servers(lab).observed(), now=PROBED_AT).effective() == ()


def loaded_lb(lab: Cluster) -> Ctx:
    """lb01 running haproxy with the rendered file, loaded as it is (nothing to reload)."""
    ctx = Ctx(lab)
    fake = ctx.transport("lb01")
    want = hashlib.sha256(desired.haproxy_cfg(lab).encode()).hexdigest()
    fake.on(("sha256sum",), stdout=f"{want}  {cmd.HAPROXY_CFG}\n")
    fake.on(("systemctl", "is-active"), stdout="active\n")
    fake.on(lambda wire: "config_mtime=" in wire,
            stdout=f"config_sha256={want}  -\nloaded_sha256={want}\n")  # fmt: skip
    return ctx


async def test_the_step_puts_the_server_back_without_a_reload(lab: Cluster) -> None:
    ctx = loaded_lb(lab)
    fake = ctx.transport("lb01")
    fake.on(lambda wire: "state ready" in wire)

    await ConfigureHAProxy(id="s", host="lb01", title="t", reason="r",
                           ready_servers=("master02",)).run(ctx)
    wires = [c.wire for c in fake.calls]
    assert any("set server k8s-api-backend/master02 state ready" in w for w in wires)
    assert not any(a[:2] == ("systemctl", "reload") for a in ctx.argvs("lb01"))


async def test_the_step_fails_when_haproxy_refuses(lab: Cluster) -> None:
    ctx = loaded_lb(lab)
    fake = ctx.transport("lb01")
    fake.on(lambda wire: "state ready" in wire, stdout="No such server.\n")
    with pytest.raises(CommandError, match="No such server"):
        await ConfigureHAProxy(id="s", host="lb01", title="t", reason="r",
                               ready_servers=("master02",)).run(ctx)
