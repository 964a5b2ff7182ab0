"""InstallPodNetwork: the pod network's objects (flannel's release manifest for the spec, or the
user's files) applied through the API from the first master, right after ``kubeadm init``.

The manifest is rendered from the spec (:mod:`hactl.render.cni`), written 0600 to
``/run/hactl/pod-network.yaml`` and applied with ``kubectl apply --server-side
--field-manager=hactl --force-conflicts``: idempotent (objects that match are left unchanged),
the server merges each object and records hactl's fields. The file is removed afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hactl.errors import CommandError
from hactl.plan import commands as cmd
from hactl.plan.remote import put, run
from hactl.plan.step import Step, StepContext
from hactl.vocabulary import Action


@dataclass(frozen=True)
class InstallPodNetwork(Step):
    kind: ClassVar[str] = "install_pod_network"
    order: ClassVar[int] = 36
    plugin: str = ""
    """What is installed, in words (``flannel v0.25.7``)."""
    digest: str = ""
    """sha256 of the manifest the plan rendered: a saved plan applied after the spec's manifest
    files changed is refused rather than applying objects the plan did not show."""
    action: Action = Action.CREATE
    timeout: float = 120.0

    def commands(self) -> list[str]:
        return [
            cmd.shown_put(cmd.POD_NETWORK_MANIFEST, 0o600, f"the objects of {self.plugin or 'the pod network'}, "
                          "rendered from the spec"),
            cmd.shown(cmd.apply_server_side(), "objects that match are left as they are"),
            cmd.shown(cmd.remove(cmd.POD_NETWORK_MANIFEST)),
        ]

    async def run(self, ctx: StepContext) -> None:
        from hactl.render.cni import manifest_digest, manifest_text, network_objects

        assert self.host is not None
        objects = network_objects(ctx.cluster)
        if not objects:
            ctx.log("no pod network to install (network.plugin: none)")
            return
        if self.digest and manifest_digest(objects) != self.digest:
            raise CommandError("the pod network's manifest differs from the one the plan rendered "
                               "(network.manifests files changed since the plan?)", host=self.host,
                               step=self.id, hint="run `hactl plan` again and apply the new plan")
        await put(ctx, self.host, cmd.POD_NETWORK_MANIFEST, manifest_text(objects), 0o600)
        try:
            res = await run(ctx, self.host, cmd.apply_server_side(), check=False)
        finally:
            await run(ctx, self.host, cmd.remove(cmd.POD_NETWORK_MANIFEST), check=False)
        if not res.ok:
            said = (res.stderr.strip() or res.stdout.strip() or f"exit {res.exit_status}")
            raise CommandError(f"kubectl apply --server-side of the pod network failed: {said[-600:]}",
                               host=self.host, step=self.id,
                               transient="connection refused" in said or "timeout" in said.lower(),
                               hint="the message names the object; fix the spec or the cluster "
                               "and run `hactl apply` again")
        ctx.log("pod network applied", objects=len(objects))
