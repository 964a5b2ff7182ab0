"""WaitEtcdHealthy: wait until the etcd cluster is healthy as design rule 2 defines it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import ClassVar

from hactl import hostlayout
from hactl.plan import commands as cmd
from hactl.plan.etcd_ops import shown_wait_healthy, wait_healthy
from hactl.plan.remote import run
from hactl.plan.step import Step, StepContext
from hactl.vocabulary import Action


@dataclass(frozen=True)
class WaitEtcdHealthy(Step):
    kind: ClassVar[str] = "wait_etcd_healthy"
    order: ClassVar[int] = 21
    action: Action = Action.READ
    timeout: float = 180.0

    def commands(self) -> list[str]:
        return [*shown_wait_healthy(self.host or ""),
                cmd.shown(cmd.remove(hostlayout.ETCD_BOOTSTRAP_MARKER),
                          "on each member: the cluster has formed")]

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        cluster = ctx.cluster
        await wait_healthy(ctx, cluster.host(self.host), list(cluster.etcd_members),
                           timeout=self.timeout - 5)
        # Every member is healthy: the cluster has formed, a bootstrap is no longer pending.
        await asyncio.gather(*(run(ctx, h.name, cmd.remove(hostlayout.ETCD_BOOTSTRAP_MARKER))
                               for h in cluster.etcd_members))
        ctx.log("etcd healthy", members=len(cluster.etcd_members))
