"""GenerateEtcdCA: make the etcd CA once, in memory, and keep it on the first etcd member."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import ClassVar

from hactl import hostlayout
from hactl.plan import commands as cmd
from hactl.plan.etcd_ops import find_ca_host, shown_find_ca
from hactl.plan.remote import put, run
from hactl.plan.step import Step, StepContext


@dataclass(frozen=True)
class GenerateEtcdCA(Step):
    kind: ClassVar[str] = "generate_etcd_ca"
    order: ClassVar[int] = 10
    timeout: float = 60.0

    def commands(self) -> list[str]:
        return [
            *shown_find_ca(self.host or ""),
            "(in memory) generate etcd-ca",
            cmd.shown(cmd.mkdir(hostlayout.ETCD_PKI_DIR)),
            cmd.shown_put(hostlayout.ETCD_CA_KEY, 0o600, "the key first: a key alone is no CA"),
            cmd.shown_put(hostlayout.ETCD_CA_CERT, 0o644),
        ]

    async def run(self, ctx: StepContext) -> None:
        from hactl.render import etcd_pki  # cryptography: imported when the step runs

        assert self.host is not None
        existing = await find_ca_host(ctx, self.host)
        if existing is not None:
            ctx.log("etcd CA already present", ca_host=existing)
            return
        ca = await asyncio.to_thread(etcd_pki.make_etcd_ca)  # keygen off the event loop
        await run(ctx, self.host, cmd.mkdir(hostlayout.ETCD_PKI_DIR))
        await put(ctx, self.host, hostlayout.ETCD_CA_KEY, ca.key_pem(), 0o600)
        await put(ctx, self.host, hostlayout.ETCD_CA_CERT, ca.cert_pem(), 0o644)
        ctx.log("etcd CA generated")
