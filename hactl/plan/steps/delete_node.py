"""DeleteNode: delete the Node object of a host that left the cluster (through a master).

``kubectl delete node N --ignore-not-found`` (a Node that is gone already is no error), then the
API is asked until it answers NotFound for the Node (a few seconds at most).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hactl.errors import CommandError
from hactl.plan import commands as cmd
from hactl.plan.remote import run, wait_for
from hactl.plan.step import Step, StepContext
from hactl.plan.steps.drain_node import read_node
from hactl.vocabulary import Action

GONE_TIMEOUT = 30.0
"""Seconds the Node may still be listed after the delete."""


@dataclass(frozen=True)
class DeleteNode(Step):
    kind: ClassVar[str] = "delete_node"
    order: ClassVar[int] = 73
    node: str = ""
    """The Node's name."""
    action: Action = Action.DELETE
    timeout: float = 90.0

    def commands(self) -> list[str]:
        return [cmd.shown(cmd.delete_node(self.node), "nothing when it is gone already"),
                cmd.shown(cmd.get_node(self.node),
                          f"every second until the API answers NotFound (at most {GONE_TIMEOUT:g} s)")]

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        via, name = self.host, self.node
        delete = cmd.delete_node(name)
        result = await run(ctx, via, delete, check=False)
        if not result.ok:
            said = result.stderr.strip() or result.stdout.strip() or f"exit {result.exit_status}"
            raise CommandError(f"could not delete Node {name} through {via}: {said}", host=via,
                               step=self.id, transient=True)

        async def gone() -> str | None:
            return None if await read_node(ctx, via, name, "is it gone?") is None else "still listed"

        await wait_for(f"Node {name} to be gone", gone, timeout=GONE_TIMEOUT, interval=1.0, host=via)
        ctx.log("Node deleted", node=name)
