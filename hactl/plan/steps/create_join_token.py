"""CreateJoinToken: a bootstrap token (2 h TTL) and the CA hash for this run's joins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hactl.plan.join_ops import (
    ensure_ca_hash,
    ensure_token,
    shown_ensure_ca_hash,
    shown_ensure_token,
)
from hactl.plan.step import Step, StepContext


@dataclass(frozen=True)
class CreateJoinToken(Step):
    kind: ClassVar[str] = "create_join_token"
    order: ClassVar[int] = 45
    timeout: float = 60.0

    def commands(self) -> list[str]:
        host = self.host or ""
        return [*shown_ensure_token(host), *shown_ensure_ca_hash(host)]

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        await ensure_token(ctx, self.host)
        await ensure_ca_hash(ctx, self.host)
        ctx.log("join token ready")
