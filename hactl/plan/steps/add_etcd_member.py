"""AddEtcdMember: ``etcdctl member add --learner`` through a running member (one at a time)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hactl.diff import client_url, peer_url
from hactl.plan import commands as cmd
from hactl.plan.etcd_ops import list_members, shown_list_members
from hactl.plan.remote import run, wait_for
from hactl.plan.step import Step, StepContext

P = cmd.placeholder


@dataclass(frozen=True)
class AddEtcdMember(Step):
    kind: ClassVar[str] = "add_etcd_member"
    order: ClassVar[int] = 22
    member: str = ""
    """The member to add (its host is ``member``; the step runs on ``host``, a running member)."""
    timeout: float = 60.0

    def commands(self) -> list[str]:
        via = self.host or ""
        return [
            shown_list_members(via, note=f"{self.member} listed already (name or peer URL): done"),
            cmd.shown(cmd.member_add(P(f"client URL of {via} in the spec"), self.member,
                                     P(f"peer URL of {self.member} in the spec")),
                      "retried until etcd accepts it; a learner until promoted"),
        ]

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        cluster = ctx.cluster
        via = cluster.host(self.host)
        new = cluster.host(self.member)
        purl = peer_url(cluster, new)

        async def added() -> str | None:
            members = await list_members(ctx, via)
            if any(m.name == new.name or purl in m.peer_urls for m in members):
                return None
            # etcd refuses with "unhealthy cluster" until every voter has been connected for 5 s
            result = await run(ctx, via.name, cmd.member_add(client_url(cluster, via), new.name, purl),
                               check=False)
            return None if result.ok else (result.stderr.strip() or "member add failed")

        await wait_for(f"etcd to accept member {self.member}", added, timeout=self.timeout - 10,
                       interval=2.0, host=self.host)
        ctx.log("member is listed (learner until promoted)", member=self.member)
