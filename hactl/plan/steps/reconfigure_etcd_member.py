"""ReconfigureEtcdMember: (re)write a member's config and (re)start it; one member at a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hactl.diff import client_url
from hactl.plan import commands as cmd
from hactl.plan import desired
from hactl.plan.etcd_ops import list_members, parse_health
from hactl.plan.remote import put, run, wait_for
from hactl.plan.step import Action, Step, StepContext
from hactl.plan.steps.start_etcd_member import initial_members


@dataclass(frozen=True)
class ReconfigureEtcdMember(Step):
    kind: ClassVar[str] = "reconfigure_etcd_member"
    order: ClassVar[int] = 26
    via: str = ""
    """Another member to ask for the member list ("" when no member answers)."""
    rewrite: bool = False
    """Rewrite env + unit (configuration drift) and restart; otherwise only start."""
    action: Action = "update"
    timeout: float = 180.0

    def commands(self) -> list[str]:
        if self.rewrite:
            return [f"put {cmd.ETCD_ENV}, {cmd.ETCD_UNIT}", "systemctl daemon-reload",
                    "systemctl restart etcd", "wait until the member is healthy"]
        return ["systemctl enable etcd", "systemctl start --no-block etcd",
                "wait until the member is healthy"]

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        cluster = ctx.cluster
        me = cluster.host(self.host)
        if self.rewrite:
            via = cluster.host(self.via or self.host)
            hosts = initial_members(cluster, await list_members(ctx, via), me)
            await put(ctx, self.host, cmd.ETCD_ENV,
                      desired.etcd_env(cluster, self.host, state="existing", members=hosts))
            await put(ctx, self.host, cmd.ETCD_UNIT, desired.etcd_unit(cluster))
            await run(ctx, self.host, cmd.systemctl("daemon-reload"))
            await run(ctx, self.host, cmd.systemctl("enable", "etcd"))
            await run(ctx, self.host, cmd.systemctl("restart", "--no-block", "etcd"))
        else:
            await run(ctx, self.host, cmd.systemctl("enable", "etcd"))
            await run(ctx, self.host, cmd.systemctl("start", "--no-block", "etcd"))
        endpoint = client_url(cluster, me)

        async def healthy() -> str | None:
            result = await run(ctx, self.host or "", cmd.endpoint_health([endpoint]), check=False)
            return None if parse_health(result.stdout).get(endpoint) else "endpoint not healthy"

        await wait_for(f"etcd member {self.host} to be healthy", healthy,
                       timeout=self.timeout - 10, host=self.host)
        ctx.log("etcd member running")
