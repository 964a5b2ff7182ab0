"""hactl's removal steps run with the machine's real kubectl against the stand-ins: DrainNode
(cordon, ``kubectl drain`` through the eviction API) with a PodDisruptionBudget that blocks it and
one that lets it through, and DeleteNode. The step's commands run on this machine through a
transport that only points ``--kubeconfig`` at the stand-in API server's admin kubeconfig (the
argv is otherwise what a master runs)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hactl import hostlayout
from hactl.errors import PlanError
from hactl.lab.standins.kubeapi import Client
from hactl.plan.step import RunSecrets
from hactl.plan.steps import DeleteNode, DrainNode
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.transport.base import Command, Result, check_result, wire_command

from . import test_drain_pdb as drain_pdb
from .conftest import Apiserver, Component, wait_for
from .test_drain_pdb import NODE, pdb, pods_left, replicaset, running, wait_pdb

kubelet, kcm = drain_pdb.kubelet, drain_pdb.kcm
"""The fixtures of test_drain_pdb: the kubelet stand-in as worker01, the controller-manager (its
disruption controller keeps the budgets' status); the admin client is conftest's."""

REPO = Path(__file__).resolve().parents[2]
LAB = load_file(str(REPO / "specs" / "lab.yaml")).cluster


@dataclass
class LocalKubectl:
    """Runs a step's kubectl argv here, ``--kubeconfig`` pointed at the stand-in's admin.conf."""

    conf: Path
    home: Path
    calls: list[tuple[str, ...]] = field(default_factory=list)

    async def run(self, command: Command, *, stdin: bytes | str | None = None,
                  timeout: float | None = None, check: bool = True, backstop: bool = True) -> Result:
        assert not isinstance(command, str), wire_command(command)
        argv = tuple(str(a) for a in command)
        assert argv[:3] == ("kubectl", "--kubeconfig", hostlayout.ADMIN_CONF), argv
        self.calls.append(argv)
        proc = await asyncio.create_subprocess_exec(
            "/usr/bin/kubectl", "--kubeconfig", str(self.conf), *argv[3:],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, HOME=str(self.home)))
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        result = Result(proc.returncode or 0, out.decode(), err.decode())
        return check_result("master01", command, result) if check else result

    async def put(self, path: str, data: bytes, mode: int = 0o644) -> None:
        raise AssertionError(f"no step here writes files ({path})")

    async def aclose(self) -> None:
        return None


@dataclass
class LocalCtx:
    cluster: Cluster
    local: LocalKubectl
    secrets: RunSecrets = field(default_factory=RunSecrets)
    events: list[tuple[str, dict[str, object]]] = field(default_factory=list)

    def transport(self, host: str) -> Any:
        assert host == "master01", host
        return self.local

    def log(self, event: str, **fields: object) -> None:
        self.events.append((event, fields))


@pytest.fixture
def ctx(apiserver: Apiserver) -> LocalCtx:
    return LocalCtx(LAB, LocalKubectl(apiserver.admin_conf, apiserver.pki.dir))


def step(cls: type, **kw: Any) -> Any:
    return cls(id=f"{cls.kind}[{NODE}]", host="master01", title="t", reason="r", node=NODE, **kw)


def unschedulable(admin: Client) -> bool:
    return bool(admin.get(f"/api/v1/nodes/{NODE}").get("spec", {}).get("unschedulable"))


async def test_drain_node_evicts_the_pods_and_leaves_the_node_cordoned(
        ctx: LocalCtx, admin: Client, kubelet: subprocess.Popen[bytes]) -> None:
    names = replicaset(admin, "web", 2)
    wait_for(running(admin, names), 20, "pods Running")
    await step(DrainNode, drain_timeout=60).run(ctx)
    assert pods_left(admin) == [] and unschedulable(admin)
    assert [c[5] for c in ctx.local.calls] == ["get", "cordon", "drain", "get"]
    assert ("Node drained", {"node": NODE}) in ctx.events
    # idempotent: a second run cordons and drains nothing more
    await step(DrainNode, drain_timeout=60).run(ctx)
    assert pods_left(admin) == [] and unschedulable(admin)


async def test_drain_node_blocked_by_a_budget_names_the_pods_and_the_budget(
        ctx: LocalCtx, admin: Client, kubelet: subprocess.Popen[bytes], kcm: Component) -> None:
    names = replicaset(admin, "web", 2)
    wait_for(running(admin, names), 20, "pods Running")
    pdb(admin, "web", "web", minAvailable=2)
    wait_pdb(admin, "web", currentHealthy=2, disruptionsAllowed=0)
    with pytest.raises(PlanError) as err:
        await step(DrainNode, drain_timeout=8).run(ctx)
    text = str(err.value)
    assert f"the drain of Node {NODE} did not finish within 8s; these pods blocked it:" in text
    for name in names:
        assert (f"  - default/{name}: Cannot evict pod as it would violate the pod's disruption "
                "budget. (PodDisruptionBudget default/web (minAvailable: 2; 2 healthy, 0 "
                "disruptions allowed))") in text
    assert f"Node {NODE} stays cordoned" in text
    assert "--disable-eviction" in (err.value.hint or "") and "now 8)" in (err.value.hint or "")
    assert pods_left(admin) == names and unschedulable(admin)
    # the operator lets the budget allow it: the next run drains
    subprocess.run(["/usr/bin/kubectl", "--kubeconfig", str(ctx.local.conf), "patch", "pdb", "web",
                    "--type=merge", "-p", '{"spec":{"minAvailable":0}}'], check=True,
                   capture_output=True, env=dict(os.environ, HOME=str(ctx.local.home)))
    wait_pdb(admin, "web", disruptionsAllowed=2)
    await step(DrainNode, drain_timeout=60).run(ctx)
    assert pods_left(admin) == []


async def test_delete_node_deletes_it_and_is_done_when_it_is_gone(ctx: LocalCtx, admin: Client) -> None:
    admin.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})
    await step(DeleteNode).run(ctx)
    assert admin.find(f"/api/v1/nodes/{NODE}") is None
    await step(DeleteNode).run(ctx)  # gone already: nothing to do
    assert [c[5:8] for c in ctx.local.calls].count(("delete", "node", NODE)) == 2
