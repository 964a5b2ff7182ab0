"""JoinWorker: ``kubeadm join --config`` as a worker (workers join in parallel), CA hash pinned.

The token travels in a 0600 JoinConfiguration that exists only while the join runs, never in
argv (``ps`` shows every local user the command lines)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hactl.errors import CommandError
from hactl.plan import commands as cmd
from hactl.plan import desired
from hactl.plan.join_ops import ensure_ca_hash, ensure_token, run_with_secrets, secret_file
from hactl.plan.remote import parse_json, run, wait_for
from hactl.plan.step import Step, StepContext
from hactl.sensitive import MASK
from hactl.transport.base import display_command

KUBELET_CONF = "/etc/kubernetes/kubelet.conf"
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"


@dataclass(frozen=True)
class JoinWorker(Step):
    kind: ClassVar[str] = "join_worker"
    order: ClassVar[int] = 60
    via: str = ""
    reset_first: bool = False
    """A failed join left kubelet.conf but no Node: ``kubeadm reset -f`` before joining again."""
    timeout: float = 600.0

    def commands(self) -> list[str]:
        return [*(["kubeadm reset -f  # files of a failed join, no Node"] if self.reset_first else []),
                "systemctl enable kubelet",
                *join_commands(f"token: {MASK}, caCertHashes: [sha256:…]"),
                "wait for the Node to register"]

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        # A retry after this run's own attempt was cut: reset what it left, as the plan would.
        if self.reset_first or self.host in ctx.secrets.joins_started:
            if await node_registered(ctx, self.via, self.host):
                ctx.log("Node registered meanwhile; nothing to redo")
                return
            await run(ctx, self.host, cmd.kubeadm_reset(), timeout=300.0)
        elif (await run(ctx, self.host, cmd.file_exists(KUBELET_CONF), check=False)).ok:
            ctx.log("already joined")
            return
        token = await ensure_token(ctx, self.via)
        ca_hash = await ensure_ca_hash(ctx, self.via)
        config = desired.kubeadm_join_config(ctx.cluster, ctx.cluster.host(self.host), token, ca_hash)
        await run(ctx, self.host, cmd.systemctl("enable", "kubelet"))  # survive reboots
        ctx.secrets.joins_started.add(self.host)
        async with secret_file(ctx, self.host, cmd.KUBEADM_JOIN_CONFIG, config) as path:
            await run_with_secrets(ctx, self.host, cmd.kubeadm_join(path), [token],
                                   timeout=self.timeout - 120)
        await wait_for_node(ctx, self.via, self.host, control_plane=False)
        ctx.log("joined as worker")


def join_commands(secrets: str) -> list[str]:
    """How a join shows in plans: the 0600 file (secrets masked), the argv, the removal."""
    return [
        f"put {cmd.KUBEADM_JOIN_CONFIG} 0600 (JoinConfiguration: apiServerEndpoint, {secrets}, "
        "node name and address from the spec)",
        display_command(cmd.kubeadm_join()),
        f"{display_command(cmd.remove(cmd.KUBEADM_JOIN_CONFIG))}  # also when the join fails",
    ]


async def wait_for_node(ctx: StepContext, via: str, name: str, *, control_plane: bool,
                        timeout: float = 120.0) -> None:
    """Postcondition: the Node object exists (with the control-plane label for masters)."""

    async def registered() -> str | None:
        res = await run(ctx, via, cmd.get_node(name), check=False)
        if not res.ok:
            return res.stderr.strip() or "node not found"
        data = parse_json(res.stdout)
        labels = (data or {}).get("metadata", {}).get("labels", {}) if isinstance(data, dict) else {}
        if control_plane and CONTROL_PLANE_LABEL not in labels:
            return "node has no control-plane label yet"
        return None

    await wait_for(f"Node {name} to register", registered, timeout=timeout, interval=2.0, host=name)


async def node_registered(ctx: StepContext, via: str, name: str) -> bool:
    """Fresh precondition for a re-join (a reset): is the Node object there after all? Only the
    API's NotFound counts as "no Node"; any other failure raises (transient), so a node is
    never reset because the API could not be asked."""
    res = await run(ctx, via, cmd.get_node(name), check=False)
    if res.ok:
        return True
    said = res.stderr.strip() or res.stdout.strip() or f"exit {res.exit_status}"
    if "notfound" in said.lower().replace(" ", ""):
        return False
    raise CommandError(f"could not ask the API on {via} whether Node {name} is registered "
                       f"(needed before kubeadm reset -f on {name}): {said}", host=via, transient=True)
