"""RemoveStackedMember with the machine's real etcdctl against a real three-member TLS etcd (the
members are named e0, e1, e2, as kubeadm names a stacked member after its node). The step's argv
runs here through a transport that only points it at this etcd: ``--endpoints`` of the via's
local member (``https://127.0.0.1:2379`` on a master) to e0's client URL, kubeadm's healthcheck
client certificate to this PKI's etcd client; the member URLs the step reads from the member
list are used as they are. Right after the cluster starts etcd's strict reconfig check may answer
"unhealthy cluster": the step retries it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hactl import hostlayout
from hactl.errors import PlanError
from hactl.plan import commands as cmd
from hactl.plan.step import RunSecrets
from hactl.plan.steps import RemoveStackedMember
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.transport.base import Command, Result, check_result

from .conftest import PKI, Etcd

REPO = Path(__file__).resolve().parents[2]
STACKED = load_file(str(REPO / "specs" / "stacked.yaml")).cluster


@dataclass
class LocalEtcdctl:
    etcd: Etcd
    pki: PKI
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def _here(self, argv: tuple[str, ...]) -> list[str]:
        swap = {
            f"--endpoints={cmd.STACKED_LOCAL}": f"--endpoints={self.etcd.members[0].endpoint}",
            f"--cacert={hostlayout.K8S_ETCD_CA}": f"--cacert={self.pki.etcd_ca.pair.cert}",
            f"--cert={hostlayout.STACKED_ETCD_CLIENT_CERT}": f"--cert={self.pki.etcd_client.cert}",
            f"--key={hostlayout.STACKED_ETCD_CLIENT_KEY}": f"--key={self.pki.etcd_client.key}",
        }
        return ["/usr/bin/etcdctl", *(swap.get(a, a) for a in argv[1:])]

    async def run(self, command: Command, *, stdin: bytes | str | None = None,
                  timeout: float | None = None, check: bool = True, backstop: bool = True) -> Result:
        assert not isinstance(command, str)
        argv = tuple(str(a) for a in command)
        assert argv[0] == "etcdctl", argv
        assert f"--cacert={hostlayout.K8S_ETCD_CA}" in argv  # kubeadm's client, never hactl's external one
        self.calls.append(argv)
        proc = await asyncio.create_subprocess_exec(
            *self._here(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")})
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        result = Result(proc.returncode or 0, out.decode(), err.decode())
        return check_result("e0", command, result) if check else result

    async def put(self, path: str, data: bytes, mode: int = 0o644) -> None:
        raise AssertionError(path)

    async def aclose(self) -> None:
        return None


@dataclass
class LocalCtx:
    cluster: Cluster
    local: LocalEtcdctl
    secrets: RunSecrets = field(default_factory=RunSecrets)
    events: list[tuple[str, dict[str, object]]] = field(default_factory=list)

    def transport(self, host: str) -> Any:
        assert host == "e0", host
        return self.local

    def log(self, event: str, **fields: object) -> None:
        self.events.append((event, fields))


@pytest.fixture
def ctx(etcd3: Etcd, pki: PKI) -> LocalCtx:
    return LocalCtx(STACKED, LocalEtcdctl(etcd3, pki))


def listed(ctx: LocalCtx) -> dict[str, Any]:
    argv = ctx.local._here(cmd.member_list_stacked())
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return {m.get("name", ""): m for m in json.loads(out)["members"]}


def remove(name: str, *, member_id: str = "", peer_url: str = "") -> Any:
    return RemoveStackedMember(id=f"remove[{name}]", host="e0", title="t", reason="r", member=name,
                               member_id=member_id, peer_url=peer_url)


async def test_a_member_is_removed_through_another_and_a_rerun_is_done(ctx: LocalCtx) -> None:
    members = listed(ctx)
    e2 = members["e2"]
    await remove("e2", member_id=format(e2["ID"], "x"), peer_url=e2["peerURLs"][0]).run(ctx)
    assert sorted(listed(ctx)) == ["e0", "e1"]
    assert ("stacked member removed", {"member": "e2", "id": format(e2["ID"], "x")}) in ctx.events
    await remove("e2", member_id=format(e2["ID"], "x")).run(ctx)
    assert ctx.events[-1] == ("member already gone", {"member": "e2"})


async def test_removal_that_would_break_quorum_is_refused(ctx: LocalCtx, etcd3: Etcd) -> None:
    etcd3.members[1].stop()  # e1 down: e0, e2 healthy of three
    with pytest.raises(PlanError) as err:
        await remove("e2").run(ctx)
    assert ("the cluster has 3 voting members, 2 healthy; after the removal 2 members need a quorum "
            "of ⌊2/2⌋+1 = 2 healthy voters, but only 1 would be healthy") in str(err.value)
    assert sorted(listed(ctx)) == ["e0", "e1", "e2"]
    # the stopped member itself may go: quorum holds without it
    await remove("e1").run(ctx)
    assert sorted(listed(ctx)) == ["e0", "e2"]


async def test_a_member_never_removes_itself(ctx: LocalCtx) -> None:
    with pytest.raises(PlanError, match="e0 is the member to remove"):
        await remove("e0").run(ctx)
    assert sorted(listed(ctx)) == ["e0", "e1", "e2"]


def leader(ctx: LocalCtx) -> str:
    urls = [m["clientURLs"][0] for m in listed(ctx).values()]
    argv = ctx.local._here(cmd.endpoint_status(urls, stacked=True))
    out = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    return format(out[0]["Status"]["leader"], "x")


async def test_the_leader_hands_over_to_the_via_member_before_it_is_removed(ctx: LocalCtx) -> None:
    """Real etcd: the member to remove leads (moved there first); the step moves leadership to
    e0 (the via's member), then removes it — the cluster never waits for an election."""
    members = listed(ctx)
    e2 = format(members["e2"]["ID"], "x")
    e0 = format(members["e0"]["ID"], "x")
    urls = [m["clientURLs"][0] for m in members.values()]
    for _ in range(20):  # a fresh cluster may still be settling its first election
        if subprocess.run(ctx.local._here(cmd.move_leader(urls, e2, stacked=True)),
                          capture_output=True, text=True, check=False).returncode == 0:
            break
        await asyncio.sleep(0.5)
    assert leader(ctx) == e2
    await remove("e2", member_id=e2).run(ctx)
    assert ("etcd leadership moved", {"leaving": e2, "to": e0}) in ctx.events
    assert sorted(listed(ctx)) == ["e0", "e1"]
    assert leader(ctx) == e0
