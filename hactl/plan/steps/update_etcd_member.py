"""UpdateEtcdMember: ``etcdctl member update`` of a member's peer URL through another member.

etcd's documented way to move a member's peer URL (a new address or ``etcd.peerPort``): change
it in the cluster's configuration first, then restart the member listening there
(:class:`~hactl.plan.steps.reconfigure_etcd_member.ReconfigureEtcdMember` follows). A restart
alone is not enough: with a data dir, etcd ignores ``ETCD_INITIAL_*`` and the other members keep
dialling the old URL (a ``peerPort`` edit applied that way leaves the cluster without a leader).
From the update on, the member is cut off until it restarts, so the update is gated like a
restart: every other member healthy, quorum kept without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hactl.diff import peer_url
from hactl.errors import CommandError
from hactl.plan import commands as cmd
from hactl.plan.etcd_ops import (
    endpoints_shown,
    list_endpoints,
    list_members,
    restart_check,
    shown_list_members,
    shown_restart_check,
)
from hactl.plan.remote import run
from hactl.plan.step import Step, StepContext
from hactl.vocabulary import Action

P = cmd.placeholder


@dataclass(frozen=True)
class UpdateEtcdMember(Step):
    kind: ClassVar[str] = "update_etcd_member"
    order: ClassVar[int] = 25
    member: str = ""
    """The member whose peer URL changes (the step runs on ``host``, another member)."""
    via_urls: tuple[str, ...] = ()
    """The client URLs ``host`` published at plan time (asked after the spec's)."""
    action: Action = Action.UPDATE
    timeout: float = 60.0

    def commands(self) -> list[str]:
        via = self.host or ""
        return [
            shown_list_members(via, self.via_urls, f"{self.member}'s peer URL already the spec's: done"),
            *shown_restart_check(via, self.via_urls),
            cmd.shown(cmd.member_update([endpoints_shown(via, self.via_urls)], P(f"id of {self.member}"),
                                        P(f"peer URL of {self.member} in the spec"))),
        ]

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        cluster = ctx.cluster
        via = cluster.host(self.host)
        target = cluster.host(self.member)
        want = peer_url(cluster, target)
        members = await list_members(ctx, via, self.via_urls)
        match = next((m for m in members if m.name == target.name), None)
        if match is None:
            raise CommandError(f"{self.member} is not a started member; nothing to update",
                               host=self.host)
        if match.peer_urls == (want,):
            ctx.log("peer URL already updated", member=self.member, peer_url=want)
            return
        await restart_check(ctx, target, via, self.via_urls)
        await run(ctx, via.name, cmd.member_update(list_endpoints(ctx, via, self.via_urls), match.id, want))
        ctx.log("peer URL updated", member=self.member, id=match.id, peer_url=want)
