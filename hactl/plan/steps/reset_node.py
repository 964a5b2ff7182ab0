"""ResetNode: ``kubeadm reset -f`` on a host that leaves the cluster, and its kubelet disabled.

Runs on the departing host itself (the apply connects to it at its Node's InternalIP with the
spec's ssh settings). ``kubeadm reset -f`` stops the kubelet, removes the static Pod manifests,
the kubeconfig files (kubelet.conf among them), the PKI and the kubelet's state and, on a master
of a stacked etcd, the local etcd data and (unless ``skip_etcd_member``: hactl removed that
member itself through another master first) the node's etcd member. Then ``systemctl disable
--now kubelet``: hactl enabled the kubelet at join, and a retired host must not start it again
at boot.

kubeadm empties a stacked master's etcd data dir in its ``remove-etcd-member`` phase only; when
that phase is skipped, the step moves whatever the data dir (the spec's ``etcd.dataDir``) holds
aside into ``<dataDir>.hactl-old-<UTC time>`` (hactl never deletes etcd data), so the host holds
no stale member and could join again (kubeadm's preflight wants an empty data dir).

Like kubeadm, hactl does not clean the host's iptables/IPVS rules nor its CNI configuration
(``/etc/cni/net.d``): kubeadm reset says so and leaves them to the operator, and so does hactl.

Idempotent: a host already reset (no kubelet.conf, no manifests) is not reset again; the
kubelet is still disabled. The step ends once kubelet.conf and the manifests are gone and the
kubelet is neither running nor enabled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

from hactl.errors import CommandError
from hactl.plan import commands as cmd
from hactl.plan.remote import run, wait_for
from hactl.plan.step import Step, StepContext
from hactl.transport.base import Argv, check_result
from hactl.vocabulary import Action

P = cmd.placeholder
RESET_TIMEOUT = 300.0
"""The transport's bound on ``kubeadm reset -f`` (its etcd member removal may wait)."""
NO_UNIT = ("does not exist", "not found", "not loaded")
"""systemctl's words for a host without a kubelet unit (nothing to disable)."""


@dataclass(frozen=True)
class ResetNode(Step):
    kind: ClassVar[str] = "reset_node"
    order: ClassVar[int] = 72
    node: str = ""
    """The Node's name (for the log; the step acts on ``host``)."""
    control_plane: bool = False
    """A master (its static Pods and, with stacked etcd, its local etcd member go too)."""
    skip_etcd_member: bool = False
    """hactl removed this master's stacked etcd member through another master first:
    ``--skip-phases=remove-etcd-member`` (and the member's data moved aside)."""
    external_etcd: bool = False
    """A master of a cluster with external etcd: it has no member of its own, so kubeadm's
    ``remove-etcd-member`` phase is skipped too (run, it would look for etcd Pods that do not
    exist for its API call timeout, then warn); nothing of etcd is touched on the host."""
    action: Action = Action.DELETE
    timeout: float = 420.0

    def _reset(self) -> Argv:
        return cmd.kubeadm_reset_node(skip_etcd_member=self.skip_etcd_member or self.external_etcd)

    def commands(self) -> list[str]:
        etcd = (" (its stacked etcd member was removed through another master)"
                if self.skip_etcd_member else
                " (external etcd: no member of its own to remove)" if self.external_etcd else "")
        return [
            cmd.shown(cmd.kubernetes_leftovers(), "nothing left: already reset (the kubelet is "
                      "still disabled)"),
            cmd.shown(self._reset(), f"undo the {'control-plane ' if self.control_plane else ''}"
                      f"join of {self.node}{etcd}; iptables and CNI config are left, as kubeadm does"),
            cmd.shown(cmd.systemctl("disable", "--now", "kubelet"), "a retired host never starts it at boot"),
            *self._shown_etcd_data(),
            cmd.shown(cmd.kubernetes_leftovers(), "check: kubelet.conf and the manifests are gone"),
            cmd.shown(cmd.systemctl("is-active", "kubelet"), "check: not running (repeated for up to 30 s)"),
            cmd.shown(cmd.systemctl("is-enabled", "kubelet"), "check: not enabled"),
        ]

    def _shown_etcd_data(self) -> list[str]:
        if not self.skip_etcd_member:
            return []
        data_dir = P("etcd.dataDir in the spec")
        return [cmd.shown(cmd.data_dir_members(data_dir), "kubeadm keeps the etcd data when its "
                          "remove-etcd-member phase is skipped"),
                cmd.shown(cmd.prepare_data_dir(data_dir, f"{data_dir}.hactl-old-{P('UTC time')}"),
                          "when it holds member data: moved aside, never deleted"),
                cmd.shown(cmd.data_dir_members(data_dir), "check: no member data left")]

    async def _etcd_members_in(self, ctx: StepContext, data_dir: str) -> list[str]:
        assert self.host is not None
        found = await run(ctx, self.host, cmd.data_dir_members(data_dir))
        return [line for line in found.stdout.splitlines() if line.strip()]

    async def _move_etcd_data_aside(self, ctx: StepContext) -> None:
        """The stacked member's data (its member was removed through another master)."""
        assert self.host is not None
        data_dir = ctx.cluster.etcd.data_dir
        if not await self._etcd_members_in(ctx, data_dir):
            return
        aside = f"{data_dir.rstrip('/')}.hactl-old-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        await run(ctx, self.host, cmd.prepare_data_dir(data_dir, aside))
        ctx.log("etcd data moved aside", node=self.node, data_dir=data_dir, into=aside)
        left = await self._etcd_members_in(ctx, data_dir)
        if left:
            raise CommandError(f"etcd member data is still in {data_dir} on {self.host}: {', '.join(left)}",
                               host=self.host, step=self.id)

    async def _leftovers(self, ctx: StepContext) -> list[str]:
        assert self.host is not None
        result = await run(ctx, self.host, cmd.kubernetes_leftovers())
        return [line for line in result.stdout.splitlines() if line.strip()]

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        host = self.host
        left = await self._leftovers(ctx)
        if left:
            await run(ctx, host, self._reset(), timeout=RESET_TIMEOUT)
        else:
            ctx.log("already reset", node=self.node)
        disable = cmd.systemctl("disable", "--now", "kubelet")
        result = await run(ctx, host, disable, check=False)
        if not result.ok:
            if not any(words in result.stderr for words in NO_UNIT):
                check_result(host, disable, result)
            ctx.log("no kubelet unit to disable", node=self.node)
        if self.skip_etcd_member:
            await self._move_etcd_data_aside(ctx)
        # postcondition
        left = await self._leftovers(ctx)
        if left:
            raise CommandError(f"`kubeadm reset -f` on {host} left {', '.join(left)}", host=host,
                               step=self.id, hint="look at what holds them; remove them by hand "
                               "(the node has left the cluster), then apply again")

        async def stopped() -> str | None:
            active = await run(ctx, host, cmd.systemctl("is-active", "kubelet"), check=False)
            return f"kubelet is {active.stdout.strip() or 'active'}" if active.ok else None

        await wait_for("the kubelet to stop", stopped, timeout=30.0, interval=1.0, host=host)
        enabled = await run(ctx, host, cmd.systemctl("is-enabled", "kubelet"), check=False)
        if enabled.ok:
            raise CommandError(f"kubelet on {host} is still {enabled.stdout.strip() or 'enabled'} "
                               "after `systemctl disable --now kubelet`", host=host, step=self.id,
                               transient=True, hint="look at `systemctl status kubelet` on the host")
        ctx.log("node reset, kubelet disabled", node=self.node)
