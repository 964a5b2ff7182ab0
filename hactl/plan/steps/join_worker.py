"""JoinWorker: ``kubeadm join --config`` as a worker (workers join in parallel), CA hash pinned.

The token travels in a 0600 JoinConfiguration that exists only while the join runs, never in
argv (``ps`` shows every local user the command lines)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hactl import hostlayout
from hactl.errors import CommandError
from hactl.plan import commands as cmd
from hactl.plan import desired
from hactl.plan.join_ops import (
    ensure_ca_hash,
    ensure_token,
    run_with_secrets,
    secret_file,
    shown_ensure_ca_hash,
    shown_ensure_token,
    shown_secret_file,
)
from hactl.plan.remote import parse_json, run, wait_for
from hactl.plan.step import Step, StepContext
from hactl.sensitive import MASK

KUBELET_CONF = hostlayout.KUBELET_CONF
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
RETRY_ONLY = "only on a retry of this run's own cut attempt"
"""The note on a join's reset lines when the plan saw no failed join (the step still resets
what its own interrupted attempt left before it joins again)."""


@dataclass(frozen=True)
class JoinWorker(Step):
    kind: ClassVar[str] = "join_worker"
    order: ClassVar[int] = 60
    via: str = ""
    reset_first: bool = False
    """A failed join left kubelet.conf but no Node: ``kubeadm reset -f`` before joining again."""
    timeout: float = 600.0

    def commands(self) -> list[str]:
        host = self.host or ""
        return [*reset_commands(self.via, host, self.reset_first),
                cmd.shown(cmd.file_exists(KUBELET_CONF), "there (and no reset due): already joined, done"),
                *shown_ensure_token(self.via), *shown_ensure_ca_hash(self.via),
                cmd.shown(cmd.systemctl("enable", "kubelet")),
                *join_commands(f"token: {MASK}, caCertHashes: [sha256:…]"),
                *shown_wait_for_node(self.via, host, control_plane=False)]

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
        async with secret_file(ctx, self.host, hostlayout.KUBEADM_JOIN_CONFIG, config) as path:
            await run_with_secrets(ctx, self.host, cmd.kubeadm_join(path), [token],
                                   timeout=self.timeout - 120)
        await wait_for_node(ctx, self.via, self.host, control_plane=False)
        ctx.log("joined as worker")


def reset_commands(via: str, host: str, reset_first: bool, *, stacked: bool = False,
                   external_etcd: bool = False) -> list[str]:
    """How a join's reset shows in plans: the Node checked again, then ``kubeadm reset -f``
    (with a stacked etcd, the member the reset must remove checked before and after). Without
    ``reset_first`` the same commands run only when the step retries its own cut attempt."""
    when = "" if reset_first else f"; {RETRY_ONLY}"
    out = ["check again that no Node is registered for this host (else nothing to redo)"] if reset_first else []
    out.append(cmd.shown(cmd.get_node(host), f"on {via}: registered meanwhile: nothing to redo{when}"))
    if stacked:
        if reset_first:
            out.append("refuse if the stacked etcd lists a member for this host that kubeadm reset "
                       "would not remove (no etcd manifest on it)")
        out += [cmd.shown(cmd.member_list_stacked(), f"on {via}: a member of {host} (name or peer URL)?{when}"),
                cmd.shown(cmd.file_exists(hostlayout.ETCD_MANIFEST),
                          f"when it lists one: kubeadm reset removes it only with this manifest{when}")]
    out.append(cmd.shown(cmd.kubeadm_reset(external_etcd=external_etcd),
                         "files of a failed join, no Node" if reset_first
                         else RETRY_ONLY))
    if stacked:
        out += [*(["check its etcd member is gone"] if reset_first else []),
                cmd.shown(cmd.member_list_stacked(), f"on {via}: that member is gone{when}")]
    return out


def join_commands(secrets: str) -> list[str]:
    """How a join shows in plans: the 0600 file (secrets masked), the argv, the removal."""
    return shown_secret_file(hostlayout.KUBEADM_JOIN_CONFIG,
                             f"JoinConfiguration: apiServerEndpoint, {secrets}, node name and "
                             "address from the spec", cmd.kubeadm_join(), "the join")


def shown_wait_for_node(via: str, host: str, *, control_plane: bool) -> list[str]:
    return ["wait for the Node to register",
            cmd.shown(cmd.get_node(host), f"on {via}, every 2 s until it is there"
                      + (" with the control-plane label" if control_plane else ""))]


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
