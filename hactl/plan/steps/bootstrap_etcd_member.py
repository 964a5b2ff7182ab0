"""BootstrapEtcdMember: configure and start one member of a new cluster (all start together)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hactl import hostlayout
from hactl.plan import commands as cmd
from hactl.plan import desired
from hactl.plan.etcd_ops import prepare_data_dir, shown_prepare_data_dir
from hactl.plan.remote import put, run
from hactl.plan.step import Step, StepContext

BOOTSTRAP_MARKER_TEXT = (
    "# hactl: this etcd member was started by the bootstrap of a new cluster (initial-cluster-state=new)\n"
    "# that hactl has not seen healthy yet. hactl removes this file once every member is healthy.\n"
)
MOVE_ASIDE = ("move the data dir's entries aside into <dataDir>.hactl-old-<UTC time> (nothing deleted; "
              "member data refused)")
"""What the plan says when it saw entries in the data dir (the step decides again on fresh facts)."""


@dataclass(frozen=True)
class BootstrapEtcdMember(Step):
    kind: ClassVar[str] = "bootstrap_etcd_member"
    order: ClassVar[int] = 20
    wipe_data_dir: bool = False
    """The plan saw entries but no member data in the data dir (a distro's pristine dir): the
    plan says they are moved aside. The step runs the same data dir commands either way and
    decides on fresh facts: absent → created 0700; entries but no member data → moved aside."""
    timeout: float = 120.0

    def commands(self) -> list[str]:
        out = [MOVE_ASIDE] if self.wipe_data_dir else []
        out += shown_prepare_data_dir(
            "the plan saw entries: moved aside (nothing deleted)" if self.wipe_data_dir
            else "created empty (0700) when absent; entries found now are moved aside")
        out += [
            cmd.shown_put(hostlayout.ETCD_ENV, 0o644, "initial-cluster-state=new"),
            cmd.shown_put(hostlayout.ETCD_UNIT, 0o644),
            cmd.shown_put(hostlayout.ETCD_BOOTSTRAP_MARKER, 0o644, "removed once the new cluster is healthy"),
            cmd.shown(cmd.systemctl("daemon-reload")),
            cmd.shown(cmd.systemctl("enable", "etcd")),
            cmd.shown(cmd.systemctl("start", "--no-block", "etcd"),
                      "Type=notify: ready only once a quorum runs, so never waited for here"),
        ]
        return out

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        cluster = ctx.cluster
        data_dir = cluster.etcd.data_dir
        # Re-checked on fresh facts: a dir with member data is kept, anything else moved aside.
        await prepare_data_dir(ctx, self.host, data_dir)
        await put(ctx, self.host, hostlayout.ETCD_ENV, desired.etcd_env(cluster, self.host, state="new"))
        await put(ctx, self.host, hostlayout.ETCD_UNIT, desired.etcd_unit(cluster))
        # Before the start: a member that runs (or has data) with this marker was started by a
        # bootstrap whose cluster hactl has not seen healthy, so a run stopped between members
        # can be finished by the next plan (hactl.diff: the half-bootstrap case).
        await put(ctx, self.host, hostlayout.ETCD_BOOTSTRAP_MARKER, BOOTSTRAP_MARKER_TEXT)
        await run(ctx, self.host, cmd.systemctl("daemon-reload"))
        await run(ctx, self.host, cmd.systemctl("enable", "etcd"))
        # Type=notify: a member of a new cluster is ready only once a quorum runs, so never block.
        await run(ctx, self.host, cmd.systemctl("start", "--no-block", "etcd"))
        ctx.log("etcd member started", state="new")
