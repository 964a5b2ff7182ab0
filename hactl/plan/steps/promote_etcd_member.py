"""PromoteEtcdMember: promote a learner to a voting member once it caught up with the leader."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hactl.diff import client_url
from hactl.plan import commands as cmd
from hactl.plan.etcd_ops import list_members, shown_list_members
from hactl.plan.remote import run, wait_for
from hactl.plan.step import Step, StepContext

P = cmd.placeholder


@dataclass(frozen=True)
class PromoteEtcdMember(Step):
    kind: ClassVar[str] = "promote_etcd_member"
    order: ClassVar[int] = 24
    member: str = ""
    timeout: float = 120.0

    def commands(self) -> list[str]:
        via = self.host or ""
        return [
            shown_list_members(via, note=f"{self.member} listed as a voter already: done"),
            cmd.shown(cmd.member_promote(P(f"client URL of {via} in the spec"), P(f"id of {self.member}")),
                      "retried until the learner is in sync"),
        ]

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        cluster = ctx.cluster
        via = cluster.host(self.host)

        async def promoted() -> str | None:
            members = await list_members(ctx, via)
            match = next((m for m in members if m.name == self.member), None)
            if match is None:
                return f"{self.member} is not a started member"
            if not match.is_learner:
                return None
            result = await run(ctx, via.name, cmd.member_promote(client_url(cluster, via), match.id),
                               check=False)
            return None if result.ok else (result.stderr.strip() or "promote failed")

        await wait_for(f"etcd member {self.member} to be promoted", promoted,
                       timeout=self.timeout - 10, interval=2.0, host=self.host)
        ctx.log("member is a voter", member=self.member)
