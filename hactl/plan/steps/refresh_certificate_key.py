"""RefreshCertificateKey: upload the control-plane certificates under a fresh key (2 h TTL)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hactl.plan.join_ops import key_is_fresh, shown_upload_certificate_key, upload_certificate_key
from hactl.plan.step import Step, StepContext
from hactl.vocabulary import Action


@dataclass(frozen=True)
class RefreshCertificateKey(Step):
    kind: ClassVar[str] = "refresh_certificate_key"
    order: ClassVar[int] = 46
    action: Action = Action.UPDATE
    timeout: float = 180.0

    def commands(self) -> list[str]:
        return shown_upload_certificate_key(self.host or "")

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        if key_is_fresh(ctx):
            ctx.log("certificate key of this run is still fresh")
            return
        await upload_certificate_key(ctx, self.host)
        ctx.log("certificate key uploaded")
