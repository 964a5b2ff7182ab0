"""StartEtcdMember: start an added member with initial-cluster-state=existing, wait until it runs."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import urlsplit

from hactl.errors import CommandError
from hactl.plan import commands as cmd
from hactl.plan import desired
from hactl.plan.etcd_ops import Member, data_dir_has_member, list_members
from hactl.plan.remote import put, run, wait_for
from hactl.plan.step import Step, StepContext
from hactl.spec.models import Cluster, Host


@dataclass(frozen=True)
class StartEtcdMember(Step):
    kind: ClassVar[str] = "start_etcd_member"
    order: ClassVar[int] = 23
    via: str = ""
    """A running member to ask for the member list."""
    timeout: float = 180.0

    def commands(self) -> list[str]:
        return [
            "empty the data dir (a new member starts from nothing)",
            f"put {cmd.ETCD_ENV} (initial-cluster-state=existing), {cmd.ETCD_UNIT}",
            "systemctl daemon-reload", "systemctl enable etcd", "systemctl start --no-block etcd",
            "wait until the member is started (a learner answers no health check)",
        ]

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        cluster = ctx.cluster
        via = cluster.host(self.via)
        members = await list_members(ctx, via)
        me = cluster.host(self.host)
        if not any(m.name == me.name or (m.peer_urls and _same(m, cluster, me)) for m in members):
            raise CommandError(f"{self.host} is not in the member list; add it first", host=self.host)
        data_dir = cluster.etcd.data_dir
        if not await data_dir_has_member(ctx, self.host, data_dir):
            await run(ctx, self.host, cmd.mkdir(data_dir))
            await run(ctx, self.host, cmd.empty_dir(data_dir))
        hosts = initial_members(cluster, members, me)
        env = desired.etcd_env(cluster, self.host, state="existing", members=hosts)
        await put(ctx, self.host, cmd.ETCD_ENV, env)
        await put(ctx, self.host, cmd.ETCD_UNIT, desired.etcd_unit(cluster))
        await run(ctx, self.host, cmd.systemctl("daemon-reload"))
        await run(ctx, self.host, cmd.systemctl("enable", "etcd"))
        await run(ctx, self.host, cmd.systemctl("start", "--no-block", "etcd"))

        async def started() -> str | None:
            # A learner serves no `endpoint health` (etcd 3.4): started = listed with its name.
            listed = await list_members(ctx, via)
            return None if any(m.name == me.name for m in listed) else "member not started yet"

        await wait_for(f"etcd member {self.host} to start", started, timeout=self.timeout - 10,
                       host=self.host)
        ctx.log("etcd member started", state="existing")


def _same(member: Member, cluster: Cluster, host: Host) -> bool:
    from hactl.diff import peer_url

    return peer_url(cluster, host) in member.peer_urls


def initial_members(cluster: Cluster, members: list[Member], me: Host) -> list[Host]:
    """ETCD_INITIAL_CLUSTER for a member joining a running cluster: every listed member
    (spec hosts by name; members outside the spec from their peer URL) plus itself."""
    by_name = {h.name: h for h in cluster.etcd_members}
    hosts: list[Host] = []
    for m in sorted(members, key=lambda m: m.name or m.id):
        if _same(m, cluster, me) or m.name == me.name:
            continue
        if m.name in by_name:
            hosts.append(by_name[m.name])
        elif m.peer_urls:
            addr = urlsplit(m.peer_urls[0]).hostname or ""
            hosts.append(Host(name=m.name or f"m{m.id}", address=ipaddress.ip_address(addr)))
    hosts.append(me)
    return hosts
