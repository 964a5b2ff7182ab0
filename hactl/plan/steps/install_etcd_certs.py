"""InstallEtcdCerts: copy the etcd CA to a member and issue its server, peer and client certs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import ClassVar

from hactl.errors import CommandError
from hactl.plan import commands as cmd
from hactl.plan.etcd_ops import NO_CA_KEY, NO_CA_KEY_HINT, find_ca_host, read_ca
from hactl.plan.remote import put, run
from hactl.plan.step import Step, StepContext

REQUIRED = (cmd.ETCD_CA_CERT, cmd.ETCD_SERVER_CERT, cmd.ETCD_SERVER_KEY, cmd.ETCD_PEER_CERT,
            cmd.ETCD_PEER_KEY, cmd.ETCD_CLIENT_CERT, cmd.ETCD_CLIENT_KEY)
"""All present: nothing to do. Any absent (an install killed half-way): issue them all again."""


@dataclass(frozen=True)
class InstallEtcdCerts(Step):
    kind: ClassVar[str] = "install_etcd_certs"
    order: ClassVar[int] = 11
    ca_host: str = ""
    timeout: float = 60.0

    def commands(self) -> list[str]:
        return [
            f"read the etcd CA from {self.ca_host} into memory",
            f"put {cmd.ETCD_PKI_DIR}/{{ca,server,peer,healthcheck-client}}.crt 0644 and .key 0600",
        ]

    async def run(self, ctx: StepContext) -> None:
        from hactl.render import etcd_pki  # cryptography: imported when the step runs

        assert self.host is not None
        have = await run(ctx, self.host, ("test", "-e", REQUIRED[0], *_and_exist(REQUIRED[1:])),
                         check=False)
        if have.ok:
            ctx.log("etcd certificates already present")
            return
        source = await find_ca_host(ctx, self.ca_host)
        if source is None:
            raise CommandError(NO_CA_KEY, host=self.host, hint=NO_CA_KEY_HINT)
        ca = await read_ca(ctx, source)
        member = await asyncio.to_thread(etcd_pki.issue_member, ca, ctx.cluster.host(self.host))
        files = etcd_pki.EtcdPKI(ca, {self.host: member}, member.healthcheck_client).member_files(self.host)
        await run(ctx, self.host, cmd.mkdir(cmd.ETCD_PKI_DIR))
        if source != self.host:
            await put(ctx, self.host, cmd.ETCD_CA_KEY, ca.key_pem(), 0o600)
        for f in files:
            await put(ctx, self.host, f.path, f.reveal().encode(), f.mode)
        ctx.log("etcd certificates installed", files=len(files))


def _and_exist(paths: tuple[str, ...]) -> tuple[str, ...]:
    out: tuple[str, ...] = ()
    for path in paths:
        out += ("-a", "-e", path)
    return out
