"""Verify: the converged cluster answers: etcd healthy (rule 2), /readyz through the load
balancer, every spec node registered. ``hactl check`` reports the full health."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hactl.errors import CommandError
from hactl.plan import commands as cmd
from hactl.plan.etcd_ops import wait_healthy
from hactl.plan.remote import parse_json, run, wait_for
from hactl.plan.step import Step, StepContext
from hactl.vocabulary import Action


@dataclass(frozen=True)
class Verify(Step):
    kind: ClassVar[str] = "verify"
    order: ClassVar[int] = 90
    via: str = ""
    """An initialised master to ask."""
    action: Action = Action.READ
    timeout: float = 300.0

    def commands(self) -> list[str]:
        return ["etcdctl member list + endpoint health (external etcd)",
                "kubectl get --raw /readyz (through the load balancer)", "kubectl get nodes -o json"]

    async def run(self, ctx: StepContext) -> None:
        cluster = ctx.cluster
        if cluster.etcd.topology == "external":
            members = list(cluster.etcd_members)
            await wait_healthy(ctx, members[0], members, timeout=120.0)
        if not self.via:
            return

        async def ready() -> str | None:
            res = await run(ctx, self.via, cmd.readyz(), check=False)
            return None if res.ok and res.stdout.strip() == "ok" else "readyz not ok"

        await wait_for("/readyz through the load balancer", ready, timeout=60.0, host=self.via)
        res = await run(ctx, self.via, cmd.kubectl("get", "nodes", "-o", "json"))
        data = parse_json(res.stdout)
        names = {i.get("metadata", {}).get("name") for i in (data or {}).get("items", [])} if isinstance(data, dict) else set()
        missing = [h.name for h in (*cluster.masters, *cluster.workers) if h.name not in names]
        if missing:
            raise CommandError(f"nodes not registered: {', '.join(missing)}", host=self.via,
                               transient=True)
        ctx.log("cluster verified", nodes=len(names))
