"""JoinControlPlane: ``kubeadm join --config`` with a ``controlPlane`` stanza, one node at a time,
CA hash pinned. Token and certificate key travel in a 0600 JoinConfiguration that exists only
while the join runs, never in argv."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hactl import hostlayout
from hactl.errors import CommandError
from hactl.plan import commands as cmd
from hactl.plan import desired
from hactl.plan.etcd_ops import shown_wait_stacked_settled, wait_stacked_etcd_settled
from hactl.plan.join_ops import (
    check_member_removed,
    ensure_ca_hash,
    ensure_certificate_key,
    ensure_token,
    guard_stacked_member,
    run_with_secrets,
    secret_file,
    shown_ensure_ca_hash,
    shown_ensure_token,
    shown_upload_certificate_key,
    shown_wait_api_ready,
    wait_api_ready,
)
from hactl.plan.remote import run
from hactl.plan.step import Step, StepContext
from hactl.plan.steps.join_worker import (
    join_commands,
    node_registered,
    reset_commands,
    shown_wait_for_node,
    wait_for_node,
)
from hactl.sensitive import MASK


@dataclass(frozen=True)
class JoinControlPlane(Step):
    kind: ClassVar[str] = "join_control_plane"
    order: ClassVar[int] = 50
    via: str = ""
    """An initialised master: makes the token and key, and is asked for the Node."""
    reset_first: bool = False
    """A failed join left files but no Node: ``kubeadm reset -f`` before joining again."""
    stacked_etcd: bool = False
    """The join adds a member to kubeadm's stacked etcd: it waits for that etcd to be settled
    first, and a reset checks the member the failed join left (the plan sets it from the spec's
    ``etcd.topology``; run() obeys it)."""
    timeout: float = 900.0

    def commands(self) -> list[str]:
        host = self.host or ""
        return [
            "wait for /readyz of the first master through the load balancer",
            *shown_wait_api_ready(self.via),
            *reset_commands(self.via, host, self.reset_first, stacked=self.stacked_etcd,
                            external_etcd=not self.stacked_etcd),
            cmd.shown(cmd.file_exists(hostlayout.ADMIN_CONF), "there (and no reset due): done when "
                      "its Node is registered, else refused (plan again)"),
            cmd.shown(cmd.get_node(host), f"on {self.via}, when admin.conf is there"),
            *(["wait until the stacked etcd is healthy and settled", *shown_wait_stacked_settled()]
              if self.stacked_etcd else []),
            *shown_ensure_token(self.via),
            *shown_upload_certificate_key(self.via),
            *shown_ensure_ca_hash(self.via),
            cmd.shown(cmd.systemctl("enable", "kubelet")),
            *join_commands(f"token: {MASK}, caCertHashes: [sha256:…], "
                           f"controlPlane.certificateKey: {MASK}"),
            *shown_wait_for_node(self.via, host, control_plane=True),
        ]

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        stacked = self.stacked_etcd
        # Rule 6: only after the first master is fully up (also when it was initialised in an
        # earlier run): /readyz through the load balancer, checked before every join — and
        # before the Node check that decides a reset (it needs the API).
        await wait_api_ready(ctx, self.via)
        # A retry after this run's own attempt was cut (its connection dropped, a timeout):
        # kubeadm's files of that attempt are on the node, so finish it as the plan would.
        if self.reset_first or self.host in ctx.secrets.joins_started:
            if await node_registered(ctx, self.via, self.host):
                ctx.log("Node registered meanwhile; nothing to redo")
                return
            member = await guard_stacked_member(ctx, self.via, self.host, self.id) if stacked else None
            await run(ctx, self.host, cmd.kubeadm_reset(external_etcd=not stacked), timeout=300.0)
            if member is not None:
                await check_member_removed(ctx, self.via, self.host, self.id, member)
        elif (await run(ctx, self.host, cmd.file_exists(hostlayout.ADMIN_CONF), check=False)).ok:
            if await node_registered(ctx, self.via, self.host):
                ctx.log("already a control-plane node")
                return
            raise CommandError(
                f"{self.host} holds {hostlayout.ADMIN_CONF} but no Node {self.host} is registered: "
                "kubeadm files from an interrupted join appeared after the plan was made",
                host=self.host, step=self.id,
                hint="run `hactl plan` again: it plans `kubeadm reset -f` then the join for such a node")
        if stacked:
            # the join adds an etcd member: only into a settled cluster (one change at a time)
            await wait_stacked_etcd_settled(ctx, self.via)
        # Rule 5: check token and key before every control-plane join.
        token = await ensure_token(ctx, self.via)
        key = await ensure_certificate_key(ctx, self.via)
        ca_hash = await ensure_ca_hash(ctx, self.via)
        config = desired.kubeadm_join_config(ctx.cluster, ctx.cluster.host(self.host), token, ca_hash,
                                             key)
        await run(ctx, self.host, cmd.systemctl("enable", "kubelet"))  # survive reboots
        ctx.secrets.joins_started.add(self.host)
        async with secret_file(ctx, self.host, hostlayout.KUBEADM_JOIN_CONFIG, config) as path:
            await run_with_secrets(ctx, self.host, cmd.kubeadm_join(path), [token, key],
                                   timeout=self.timeout - 120)
        await wait_for_node(ctx, self.via, self.host, control_plane=True)
        ctx.log("joined as control-plane node")
