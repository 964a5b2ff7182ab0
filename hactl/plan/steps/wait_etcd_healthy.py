"""WaitEtcdHealthy: wait until the etcd cluster is healthy as design rule 2 defines it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hactl.plan.etcd_ops import wait_healthy
from hactl.plan.step import Action, Step, StepContext


@dataclass(frozen=True)
class WaitEtcdHealthy(Step):
    kind: ClassVar[str] = "wait_etcd_healthy"
    order: ClassVar[int] = 21
    action: Action = "read"
    timeout: float = 180.0

    def commands(self) -> list[str]:
        return ["etcdctl member list -w json", "etcdctl endpoint health -w json (each member)"]

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        cluster = ctx.cluster
        await wait_healthy(ctx, cluster.host(self.host), list(cluster.etcd_members),
                           timeout=self.timeout - 5)
        ctx.log("etcd healthy", members=len(cluster.etcd_members))
