"""WaitPodNetwork: after the pod network is installed (and the plan's joins), wait until every
Node is Ready and CoreDNS (Deployment kube-system/coredns) is available.

A Node becomes Ready once its kubelet finds a CNI configuration in /etc/cni/net.d (the CNI's
DaemonSet pod writes it); CoreDNS pods are scheduled only then. On timeout the error names each
NotReady Node with its Ready condition's message (what the kubelet says) and CoreDNS's state.
A cluster without the coredns Deployment (kubeadm's addon phase skipped) waits for the Nodes only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from hactl.plan import commands as cmd
from hactl.plan.remote import parse_json, run, wait_for
from hactl.plan.step import Step, StepContext
from hactl.vocabulary import Action

READY_TIMEOUT = 300.0
"""Seconds every Node and CoreDNS may take (images are pulled on real hosts)."""


def not_ready_nodes(nodes: Any) -> dict[str, str]:
    """``kubectl get nodes -o json`` → NotReady Node → its Ready condition's ``reason: message``."""
    out: dict[str, str] = {}
    for node in (nodes or {}).get("items") or []:
        name = (node.get("metadata") or {}).get("name", "?")
        cond = next((c for c in (node.get("status") or {}).get("conditions") or []
                     if c.get("type") == "Ready"), None)
        if cond is None or cond.get("status") != "True":
            out[name] = ": ".join(p for p in ((cond or {}).get("reason"), (cond or {}).get("message"))
                                  if p) or "no Ready condition yet"
    return out


def coredns_state(deployment: Any) -> str | None:
    """None when the Deployment is Available (or absent); else why not."""
    if not isinstance(deployment, dict) or not deployment:
        return None
    status = deployment.get("status") or {}
    cond = next((c for c in status.get("conditions") or [] if c.get("type") == "Available"), None)
    if cond is not None and cond.get("status") == "True":
        return None
    ready = status.get("availableReplicas") or 0
    want = (deployment.get("spec") or {}).get("replicas", 1)
    said = f": {cond.get('message')}" if cond is not None and cond.get("message") else ""
    return f"CoreDNS not available ({ready}/{want} replicas available{said})"


@dataclass(frozen=True)
class WaitPodNetwork(Step):
    kind: ClassVar[str] = "wait_pod_network"
    order: ClassVar[int] = 85
    action: Action = Action.READ
    timeout: float = READY_TIMEOUT + 60.0
    wait: float = READY_TIMEOUT
    """Seconds to wait for every Node to be Ready and CoreDNS to be available."""

    def commands(self) -> list[str]:
        note = f"every 2 s until every Node is Ready (at most {self.wait:g} s)"
        return [cmd.shown(cmd.get_nodes(), note),
                cmd.shown(cmd.get_deployment("kube-system", "coredns"),
                          "then until CoreDNS is available (nothing when there is no such Deployment)")]

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        host = self.host

        async def ready() -> str | None:
            got = await run(ctx, host, cmd.get_nodes(), check=False)
            if not got.ok:
                return f"kubectl get nodes failed: {got.stderr.strip()[-200:]}"
            nodes = parse_json(got.stdout)
            waiting = not_ready_nodes(nodes)
            if not (nodes or {}).get("items"):
                return "no Node registered"
            if waiting:
                return "NotReady: " + "; ".join(f"{n} ({why})" for n, why in sorted(waiting.items()))
            dep = await run(ctx, host, cmd.get_deployment("kube-system", "coredns"), check=False)
            if not dep.ok:
                return f"kubectl get deployment coredns failed: {dep.stderr.strip()[-200:]}"
            return coredns_state(parse_json(dep.stdout) if dep.stdout.strip() else None)

        await wait_for("every Node Ready and CoreDNS available", ready, timeout=self.wait,
                       interval=2.0, host=host)
        ctx.log("every Node Ready, CoreDNS available")
