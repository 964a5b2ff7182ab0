"""UpdateKubeadmConfig: kubeadm's stored ClusterConfiguration lists the spec's etcd members.

``kubeadm join --control-plane`` and ``kubeadm upgrade`` write a new master's kube-apiserver
manifest from ``etcd.external.endpoints`` of kube-system/kubeadm-config; the step sets it to
the client URLs of the spec's etcd members (nothing else in the ClusterConfiguration changes).
It reads the ConfigMap with ``kubectl get -o json``, edits that one list and writes it back with
``kubectl replace`` (the ConfigMap's resourceVersion makes a concurrent change fail the write
instead of being overwritten; the engine retries it on fresh data). No secret lives in it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

import yaml

from hactl.diff import same_servers
from hactl.errors import CommandError
from hactl.plan import commands as cmd
from hactl.plan.remote import parse_json, run
from hactl.plan.step import Step, StepContext
from hactl.transport.base import Argv
from hactl.vocabulary import Action


def with_endpoints(configmap: Any, endpoints: tuple[str, ...]) -> dict[str, Any] | None:
    """The kubeadm-config ConfigMap with ``etcd.external.endpoints`` set to ``endpoints``; None
    when it already lists the same members. ValueError when it is not kubeadm's (no
    ClusterConfiguration, or one without external etcd)."""
    if not isinstance(configmap, dict):
        raise ValueError("kube-system/kubeadm-config could not be read as JSON")
    data = configmap.get("data") or {}
    try:
        config = yaml.safe_load(data.get("ClusterConfiguration") or "")
    except yaml.YAMLError as exc:
        raise ValueError(f"its ClusterConfiguration is not YAML: {exc}") from None
    external = ((config or {}).get("etcd") or {}).get("external") if isinstance(config, dict) else None
    if not isinstance(external, dict):
        raise ValueError("its ClusterConfiguration has no etcd.external (not external etcd)")
    live = tuple(str(u) for u in external.get("endpoints") or ())
    if same_servers(live, endpoints):
        return None
    external["endpoints"] = list(endpoints)
    out = dict(configmap)
    out["data"] = {**data, "ClusterConfiguration": yaml.safe_dump(config, sort_keys=False)}
    return out


@dataclass(frozen=True)
class UpdateKubeadmConfig(Step):
    kind: ClassVar[str] = "update_kubeadm_config"
    order: ClassVar[int] = 27
    action: Action = Action.UPDATE
    timeout: float = 120.0
    endpoints: tuple[str, ...] = ()
    """The client URLs written into ``etcd.external.endpoints`` (the spec's members)."""

    def _get(self) -> Argv:
        return cmd.kubectl("get", "configmap", "-n", "kube-system", "kubeadm-config", "-o", "json")

    def _replace(self) -> Argv:
        return cmd.kubectl("replace", "-f", "-")

    def commands(self) -> list[str]:
        return [cmd.shown(self._get()),
                cmd.shown(self._replace(), "stdin: the ConfigMap with ClusterConfiguration "
                          f"etcd.external.endpoints {','.join(self.endpoints)}; nothing when it "
                          "already lists them")]

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        got = await run(ctx, self.host, self._get())
        try:
            updated = with_endpoints(parse_json(got.stdout), self.endpoints)
        except ValueError as exc:
            raise CommandError(f"kube-system/kubeadm-config cannot be updated: {exc}",
                               host=self.host, step=self.id) from None
        if updated is None:
            ctx.log("kubeadm-config already lists the spec's etcd members")
            return
        res = await run(ctx, self.host, self._replace(), stdin=json.dumps(updated), check=False)
        if not res.ok:
            raise CommandError(
                "kubectl replace of kube-system/kubeadm-config failed: "
                + (res.stderr.strip().splitlines() or ["(no output)"])[-1],
                host=self.host, step=self.id, transient="conflict" in res.stderr.lower()
                or "the object has been modified" in res.stderr)
        ctx.log("kubeadm-config etcd endpoints updated", endpoints=len(self.endpoints))
