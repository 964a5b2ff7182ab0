"""StartEtcdMember: start an added member with initial-cluster-state=existing, wait until it runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hactl import hostlayout
from hactl.diff import peer_url
from hactl.errors import CommandError
from hactl.plan import commands as cmd
from hactl.plan import desired
from hactl.plan.etcd_ops import (
    list_members,
    member_env,
    prepare_data_dir,
    shown_list_members,
    shown_prepare_data_dir,
    shown_wait_started,
    wait_started,
)
from hactl.plan.remote import put, run
from hactl.plan.step import Step, StepContext


@dataclass(frozen=True)
class StartEtcdMember(Step):
    kind: ClassVar[str] = "start_etcd_member"
    order: ClassVar[int] = 23
    via: str = ""
    """A running member to ask for the member list."""
    stale_data: bool = False
    """The plan saw member data on the host of a member that has never run (an earlier
    identity's, e.g. a replacement killed between its remove and its start): moved aside too,
    if the fresh member list still shows the member as never started."""
    timeout: float = 180.0

    def commands(self) -> list[str]:
        out = [shown_list_members(self.via, note=f"{self.host} must be listed (added); its peers "
                                  "as listed go into its etcd.env")]
        if self.stale_data:
            out.append(cmd.shown(cmd.systemctl("stop", "etcd"), f"if {self.host} is still listed as "
                                 "never started: it cannot run on an earlier identity's data"))
        out += shown_prepare_data_dir(
            "move the data dir's member data (an earlier identity's) aside into "
            "<dataDir>.hactl-old-<UTC time> (nothing deleted)" if self.stale_data else
            "created empty (0700), or its entries moved aside (nothing deleted; member data refused)")
        out += [
            cmd.shown_put(hostlayout.ETCD_ENV, 0o644, "initial-cluster-state=existing, the listed members"),
            cmd.shown_put(hostlayout.ETCD_UNIT, 0o644),
            cmd.shown(cmd.systemctl("daemon-reload")),
            cmd.shown(cmd.systemctl("enable", "etcd")),
            cmd.shown(cmd.systemctl("restart", "--no-block", "etcd"), "a replaced member's old process stops"),
            shown_wait_started(self.via, self.host or ""),
        ]
        return out

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        cluster = ctx.cluster
        via = cluster.host(self.via)
        members = await list_members(ctx, via)
        me = cluster.host(self.host)
        mine = [m for m in members if m.name == me.name or peer_url(cluster, me) in m.peer_urls]
        if not mine:
            raise CommandError(f"{self.host} is not in the member list; add it first", host=self.host)
        env = member_env(ctx, me, members)  # refuses what etcd.env cannot quote, before any change
        if self.stale_data and not any(m.started for m in mine):
            # Still never started on fresh facts: whatever member data the host holds is not
            # this member's. Stop etcd (it cannot run on it) and move the data aside.
            await run(ctx, self.host, cmd.systemctl("stop", "etcd"))
            await prepare_data_dir(ctx, self.host, cluster.etcd.data_dir, stale_member=True)
        else:
            await prepare_data_dir(ctx, self.host, cluster.etcd.data_dir)
        await put(ctx, self.host, hostlayout.ETCD_ENV, env)
        await put(ctx, self.host, hostlayout.ETCD_UNIT, desired.etcd_unit(cluster))
        await run(ctx, self.host, cmd.systemctl("daemon-reload"))
        await run(ctx, self.host, cmd.systemctl("enable", "etcd"))
        await run(ctx, self.host, cmd.systemctl("restart", "--no-block", "etcd"))
        await wait_started(ctx, via, me.name, timeout=self.timeout - 10)
        ctx.log("etcd member started", state="existing")
