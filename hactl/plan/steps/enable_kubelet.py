"""EnableKubelet: a joined node's kubelet enabled at boot and running (``systemctl enable --now``).

kubeadm only warns (``[WARNING Service-Kubelet]``) when kubelet is not enabled; such a node runs
until its first reboot and then stays down with its static pods. kubeadm's install guide enables
kubelet before ``init``/``join``; hactl does that in the init and join steps and repairs drift here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hactl.errors import CommandError
from hactl.plan import commands as cmd
from hactl.plan.remote import run
from hactl.plan.step import Step, StepContext
from hactl.vocabulary import Action


@dataclass(frozen=True)
class EnableKubelet(Step):
    kind: ClassVar[str] = "enable_kubelet"
    order: ClassVar[int] = 55
    action: Action = Action.UPDATE
    timeout: float = 60.0

    def commands(self) -> list[str]:
        return [cmd.shown(cmd.systemctl("enable", "--now", "kubelet")),
                cmd.shown(cmd.systemctl("is-active", "kubelet"))]

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        await run(ctx, self.host, cmd.systemctl("enable", "--now", "kubelet"))
        active = await run(ctx, self.host, cmd.systemctl("is-active", "kubelet"), check=False)
        if not active.ok:
            raise CommandError(
                f"kubelet is {active.stdout.strip() or 'not active'} after enable --now",
                host=self.host, step=self.id, transient=True,
                hint="look at `systemctl status kubelet` on the host",
            )
        ctx.log("kubelet enabled and running")
