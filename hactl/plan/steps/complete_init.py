"""CompleteInit: finish a ``kubeadm init`` that stopped half-way, phase by phase (M4).

A ``kubeadm init`` killed after its kubeconfig or control-plane phase leaves admin.conf (and
maybe the API server) behind but no ``kubeadm-config``, ``cluster-info`` or bootstrap-token
RBAC: every later join would fail in kubeadm. hactl never re-runs init (a second init is refused
by kubeadm's preflight once manifests exist); it runs the missing phases and every phase after
them, in kubeadm's order, with ``kubeadm init phase <phase> --config F`` — the same
configuration file init used, nothing else on the command line (kubeadm refuses flags next to
``--config``). Each phase is idempotent: existing CAs, keys and kubeconfigs are reused, manifests
rewritten the same, API objects created or updated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hactl import hostlayout
from hactl.errors import CommandError
from hactl.hostlayout import APISERVER_MANIFEST
from hactl.plan import commands as cmd
from hactl.plan import desired
from hactl.plan.join_ops import ensure_ca_hash, shown_ensure_ca_hash
from hactl.plan.remote import put, run, wait_for
from hactl.plan.step import Step, StepContext
from hactl.transport.base import Argv

FILE_PHASES = ("certs", "kubeconfig", "etcd", "control-plane", "kubelet-start")
"""Phases that only write files on the host (the API server need not answer)."""
SUB_PHASES = {"certs": "all", "kubeconfig": "all", "etcd": "local", "control-plane": "all",
              "upload-config": "all", "kubelet-finalize": "all", "addon": "all"}
"""``kubeadm init phase certs`` alone prints its help and does nothing: name the sub-phase."""
EXTRA_FLAGS = {"bootstrap-token": ("--skip-token-print",)}
"""The bootstrap-token phase would print a new token: kept off the output (a ``skip-*`` flag is
allowed next to ``--config``)."""
READY_TIMEOUT = 180.0
__all__ = ["APISERVER_MANIFEST", "CompleteInit", "api_can_come", "phase_argv", "shown_api_comes"]


def phase_argv(phase: str, config: str = hostlayout.KUBEADM_CONFIG) -> Argv:
    """``kubeadm init phase <phase> [all|local] --config F`` (nothing else mixed in)."""
    return cmd.init_phase(phase, SUB_PHASES.get(phase), config, EXTRA_FLAGS.get(phase, ()))


async def api_can_come(ctx: StepContext, host: str, step: str | None = None) -> None:
    """Before waiting for ``/readyz``: fail at once (not transient) when nothing on ``host`` can
    start the API server — no kube-apiserver manifest, or no kubelet running to start it."""
    if not (await run(ctx, host, cmd.file_exists(APISERVER_MANIFEST), check=False)).ok:
        raise CommandError(
            f"the API server cannot come up: {APISERVER_MANIFEST} does not exist (kubeadm's "
            "control-plane phase has not run)", host=host, step=step,
            hint=f"`hactl plan` again: it completes an interrupted init with `"
            f"{cmd.shown(phase_argv('control-plane'))}` and the phases after it")
    active = await run(ctx, host, cmd.systemctl("is-active", "kubelet"), check=False)
    if active.stdout.strip() != "active":
        raise CommandError(
            f"the API server cannot come up: the kubelet, which starts it from "
            f"{APISERVER_MANIFEST}, is {active.stdout.strip() or 'not running'}",
            host=host, step=step,
            hint=f"see `systemctl status kubelet` and `journalctl -u kubelet` on {host}")


def shown_api_comes() -> list[str]:
    """:func:`api_can_come` then the wait for ``/readyz``, as the plan shows them."""
    return [f"check {APISERVER_MANIFEST} exists and kubelet is active (else fail at once)",
            cmd.shown(cmd.file_exists(APISERVER_MANIFEST)),
            cmd.shown(cmd.systemctl("is-active", "kubelet")),
            "wait for /readyz through the load balancer",
            cmd.shown(cmd.readyz(), f"every 2 s, for at most {READY_TIMEOUT:g} s")]


async def wait_ready(ctx: StepContext, host: str) -> None:
    """``/readyz`` answers ``ok`` through the load balancer (admin.conf's server)."""

    async def ready() -> str | None:
        res = await run(ctx, host, cmd.readyz(), check=False)
        return None if res.ok and res.stdout.strip() == "ok" else (res.stderr.strip() or res.stdout.strip())

    await wait_for("/readyz through the load balancer", ready, timeout=READY_TIMEOUT, interval=2.0,
                   host=host)


@dataclass(frozen=True)
class CompleteInit(Step):
    kind: ClassVar[str] = "complete_init"
    order: ClassVar[int] = 41
    timeout: float = 900.0
    phases: tuple[str, ...] = ()
    """The init phases to run, in kubeadm's order (from the diff)."""

    def commands(self) -> list[str]:
        lines = [cmd.shown(cmd.mkdir(hostlayout.HACTL_ETC)),
                 cmd.shown_put(hostlayout.KUBEADM_CONFIG, 0o600,
                               "InitConfiguration + ClusterConfiguration, no secret"),
                 cmd.shown(cmd.systemctl("enable", "kubelet"))]
        waited = False
        for phase in self.phases:
            if phase not in FILE_PHASES and not waited:
                lines += shown_api_comes()
                waited = True
            lines.append(cmd.shown(phase_argv(phase)))
        return lines + shown_ensure_ca_hash(self.host or "")

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        cluster = ctx.cluster
        await run(ctx, self.host, cmd.mkdir(hostlayout.HACTL_ETC))
        await put(ctx, self.host, hostlayout.KUBEADM_CONFIG,
                  desired.kubeadm_init_config(cluster, cluster.host(self.host)), 0o600)
        await run(ctx, self.host, cmd.systemctl("enable", "kubelet"))
        waited = False
        for phase in self.phases:
            if phase not in FILE_PHASES and not waited:
                await api_can_come(ctx, self.host, self.id)
                await wait_ready(ctx, self.host)
                waited = True
            await run(ctx, self.host, phase_argv(phase), timeout=300.0)
            ctx.log("kubeadm init phase done", phase=phase)
        await ensure_ca_hash(ctx, self.host)
        ctx.log("kubeadm init completed", phases=list(self.phases))
