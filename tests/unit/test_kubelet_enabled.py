"""A joined node whose kubelet is not enabled at boot is drift: it would stay down after a reboot."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest
from stepctx import Ctx

from hactl.diff import Op
from hactl.errors import CommandError
from hactl.plan.planner import build_plan
from hactl.plan.steps import EnableKubelet
from hactl.plan.synthetic import Synthetic
from hactl.spec.load import load_cluster
from hactl.spec.models import Cluster

SPEC = Path(__file__).resolve().parents[2] / "specs" / "lab.yaml"
NOW = datetime(2026, 11, 26, tzinfo=UTC)




def _converged_with(**kubelet: bool) -> tuple[Cluster, Synthetic]:
    cluster = load_cluster(SPEC)
    world = Synthetic(cluster).converged()
    k8s = world.hosts["worker02"].kubernetes
    assert k8s is not None
    world.hosts["worker02"] = dataclasses.replace(
        world.hosts["worker02"], kubernetes=dataclasses.replace(k8s, **kubelet)
    )
    return cluster, world


def test_converged_cluster_has_nothing_to_do_for_kubelet() -> None:
    cluster = load_cluster(SPEC)
    plan = build_plan(cluster, Synthetic(cluster).converged().observed(), now=NOW)
    change = plan.diff.get("worker[worker02].kubelet")
    assert change is not None and change.op is Op.NOOP
    assert not any(isinstance(s, EnableKubelet) for s in plan.steps())


@pytest.mark.parametrize(
    ("kubelet", "words"),
    [
        ({"kubelet_enabled": False}, "not enabled at boot"),
        ({"kubelet_active": False}, "not running"),
    ],
)
def test_disabled_or_stopped_kubelet_is_drift_with_its_own_step(
    kubelet: dict[str, bool], words: str
) -> None:
    cluster, world = _converged_with(**kubelet)
    plan = build_plan(cluster, world.observed(), now=NOW)
    change = plan.diff.get("worker[worker02].kubelet")
    assert change is not None and change.op is Op.UPDATE and words in change.reason
    steps = [s for s in plan.steps() if isinstance(s, EnableKubelet)]
    assert [(s.host, s.id) for s in steps] == [("worker02", "worker[worker02].kubelet")]
    assert plan.counts() == (0, 1, 0)


async def test_enable_kubelet_step_enables_and_checks() -> None:
    ctx = Ctx(load_cluster(SPEC))
    fake = ctx.transport("worker02")
    fake.on(("systemctl", "enable", "--now", "kubelet"))
    fake.on(("systemctl", "is-active", "kubelet"), stdout="active\n")
    step = EnableKubelet(id="k", host="worker02", title="t", reason="r")
    await step.run(ctx)
    assert [c.argv for c in fake.calls] == [
        ("systemctl", "enable", "--now", "kubelet"),
        ("systemctl", "is-active", "kubelet"),
    ]


async def test_enable_kubelet_step_fails_when_it_does_not_come_up() -> None:
    ctx = Ctx(load_cluster(SPEC))
    fake = ctx.transport("worker02")
    fake.on(("systemctl", "enable", "--now", "kubelet"))
    fake.on(("systemctl", "is-active", "kubelet"), stdout="failed\n", exit_status=3)
    with pytest.raises(CommandError, match="kubelet is failed"):
        await EnableKubelet(id="k", host="worker02", title="t", reason="r").run(ctx)
