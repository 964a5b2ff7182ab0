"""BootstrapEtcdMember: configure and start one member of a new cluster (all start together)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hactl.plan import commands as cmd
from hactl.plan import desired
from hactl.plan.etcd_ops import prepare_data_dir
from hactl.plan.remote import put, run
from hactl.plan.step import Step, StepContext

BOOTSTRAP_MARKER_TEXT = (
    "# hactl: this etcd member was started by the bootstrap of a new cluster (initial-cluster-state=new)\n"
    "# that hactl has not seen healthy yet. hactl removes this file once every member is healthy.\n"
)


@dataclass(frozen=True)
class BootstrapEtcdMember(Step):
    kind: ClassVar[str] = "bootstrap_etcd_member"
    order: ClassVar[int] = 20
    wipe_data_dir: bool = False
    """The data dir holds entries but no member data (a distro's pristine dir): the plan says
    so; the step moves them aside (it decides again on fresh facts)."""
    timeout: float = 120.0

    def commands(self) -> list[str]:
        out = [f"put {cmd.ETCD_ENV} (initial-cluster-state=new), {cmd.ETCD_UNIT}"]
        if self.wipe_data_dir:
            out.append("move the data dir's entries aside into <dataDir>.hactl-old-<UTC time> "
                       "(nothing deleted; member data refused)")
        out += [f"put {cmd.ETCD_BOOTSTRAP_MARKER} (removed once the new cluster is healthy)",
                "systemctl daemon-reload", "systemctl enable etcd", "systemctl start --no-block etcd"]
        return out

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        cluster = ctx.cluster
        data_dir = cluster.etcd.data_dir
        # Re-checked on fresh facts: a dir with member data is kept, anything else moved aside.
        await prepare_data_dir(ctx, self.host, data_dir)
        await put(ctx, self.host, cmd.ETCD_ENV, desired.etcd_env(cluster, self.host, state="new"))
        await put(ctx, self.host, cmd.ETCD_UNIT, desired.etcd_unit(cluster))
        # Before the start: a member that runs (or has data) with this marker was started by a
        # bootstrap whose cluster hactl has not seen healthy, so a run stopped between members
        # can be finished by the next plan (hactl.diff: the half-bootstrap case).
        await put(ctx, self.host, cmd.ETCD_BOOTSTRAP_MARKER, BOOTSTRAP_MARKER_TEXT)
        await run(ctx, self.host, cmd.systemctl("daemon-reload"))
        await run(ctx, self.host, cmd.systemctl("enable", "etcd"))
        # Type=notify: a member of a new cluster is ready only once a quorum runs, so never block.
        await run(ctx, self.host, cmd.systemctl("start", "--no-block", "etcd"))
        ctx.log("etcd member started", state="new")
