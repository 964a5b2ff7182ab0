"""ReconfigureEtcdMember: (re)write a member's config and (re)start it; one member at a time.

A running member is restarted only when rule 1 holds on fresh facts (every other member
healthy, quorum kept without it), and the step ends once the whole cluster is healthy again
(rule 2), not only the restarted endpoint. A member that is down is started without that gate
(starting it cannot lower the count of healthy members). A learner answers no health check:
it is done once it is listed with its name (the promotion follows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hactl import hostlayout
from hactl.diff import client_url
from hactl.plan import commands as cmd
from hactl.plan import desired
from hactl.plan.etcd_ops import (
    health_by_endpoint,
    list_members,
    member_env,
    restart_check,
    shown_list_members,
    shown_restart_check,
    shown_wait_healthy,
    shown_wait_started,
    wait_healthy,
    wait_started,
)
from hactl.plan.remote import put, run, wait_for
from hactl.plan.step import Step, StepContext
from hactl.vocabulary import Action

P = cmd.placeholder


@dataclass(frozen=True)
class ReconfigureEtcdMember(Step):
    kind: ClassVar[str] = "reconfigure_etcd_member"
    order: ClassVar[int] = 26
    via: str = ""
    """Another member to ask for the member list ("" when no member answers)."""
    rewrite: bool = False
    """Rewrite env + unit (configuration drift) and restart; otherwise only start."""
    restart: bool = False
    """The member runs: restart it (gated on quorum and health) and wait for the whole cluster."""
    learner: bool = False
    """The member is a learner: wait until it is listed with its name, not for its health."""
    via_urls: tuple[str, ...] = ()
    """The client URLs ``via`` published at plan time (asked too, after the spec's: in a chain
    of restarts for a client-port change, ``via`` may not have moved yet)."""
    action: Action = Action.UPDATE
    timeout: float = 240.0

    def commands(self) -> list[str]:
        via = self.via or self.host or ""
        out: list[str] = []
        if self.restart:
            out += ["check: every other member healthy, quorum kept without this one",
                    cmd.shown(cmd.systemctl("is-active", "--quiet", "etcd"), "checked only when it runs"),
                    *shown_restart_check(via, self.via_urls)]
        if self.rewrite:
            out += [shown_list_members(via, self.via_urls, "its peers as listed go into its etcd.env"),
                    cmd.shown_put(hostlayout.ETCD_ENV, 0o644, "initial-cluster-state=existing"),
                    cmd.shown_put(hostlayout.ETCD_UNIT, 0o644),
                    cmd.shown(cmd.systemctl("daemon-reload"))]
        out.append(cmd.shown(cmd.systemctl("enable", "etcd")))
        verb = "restart" if self.rewrite or self.restart else "start"
        out.append(cmd.shown(cmd.systemctl(verb, "--no-block", "etcd")))
        if self.learner:
            out.append(shown_wait_started(via, self.host or ""))
        elif self.restart:
            out += ["wait until the whole cluster is healthy (rule 2)", *shown_wait_healthy(via, self.via_urls)]
        else:
            out.append(cmd.shown(cmd.endpoint_health([P(f"client URL of {self.host} in the spec")]),
                                 "repeated until the member is healthy"))
        return out

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        cluster = ctx.cluster
        me = cluster.host(self.host)
        via = cluster.host(self.via or self.host)
        if self.restart:
            running = await run(ctx, self.host, cmd.systemctl("is-active", "--quiet", "etcd"), check=False)
            if running.ok:
                await restart_check(ctx, me, via, self.via_urls)
        if self.rewrite:
            members = await list_members(ctx, via, self.via_urls)
            await put(ctx, self.host, hostlayout.ETCD_ENV, member_env(ctx, me, members))
            await put(ctx, self.host, hostlayout.ETCD_UNIT, desired.etcd_unit(cluster))
            await run(ctx, self.host, cmd.systemctl("daemon-reload"))
        await run(ctx, self.host, cmd.systemctl("enable", "etcd"))
        verb = "restart" if self.rewrite or self.restart else "start"
        await run(ctx, self.host, cmd.systemctl(verb, "--no-block", "etcd"))
        wait = self.timeout - 10
        if self.learner:
            await wait_started(ctx, via, me.name, timeout=wait)
        elif self.restart:
            await wait_healthy(ctx, via, list(cluster.etcd_members), timeout=wait, also=self.via_urls)
        else:
            endpoint = client_url(cluster, me)

            async def healthy() -> str | None:
                result = await run(ctx, self.host or "", cmd.endpoint_health([endpoint]), check=False)
                return None if health_by_endpoint(result.stdout).get(endpoint) else "endpoint not healthy"

            await wait_for(f"etcd member {self.host} to be healthy", healthy, timeout=wait, host=self.host)
        ctx.log("etcd member running")
