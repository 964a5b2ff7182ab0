"""InstallEtcdCerts: copy the etcd CA to a member and issue its server, peer and client certs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import ClassVar

from hactl import hostlayout
from hactl.errors import CommandError
from hactl.plan import commands as cmd
from hactl.plan.etcd_ops import (
    NO_CA_KEY,
    NO_CA_KEY_HINT,
    find_ca_host,
    read_ca,
    shown_find_ca,
    shown_read_ca,
)
from hactl.plan.remote import put, run
from hactl.plan.step import Step, StepContext

REQUIRED = (hostlayout.ETCD_CA_CERT, hostlayout.ETCD_SERVER_CERT, hostlayout.ETCD_SERVER_KEY,
            hostlayout.ETCD_PEER_CERT, hostlayout.ETCD_PEER_KEY, hostlayout.ETCD_CLIENT_CERT,
            hostlayout.ETCD_CLIENT_KEY)
"""All present: nothing to do. Any absent (an install killed half-way): issue them all again."""
ISSUED = ((hostlayout.ETCD_CA_CERT, 0o644),
          (hostlayout.ETCD_SERVER_CERT, 0o644), (hostlayout.ETCD_SERVER_KEY, 0o600),
          (hostlayout.ETCD_PEER_CERT, 0o644), (hostlayout.ETCD_PEER_KEY, 0o600),
          (hostlayout.ETCD_CLIENT_CERT, 0o644), (hostlayout.ETCD_CLIENT_KEY, 0o600))
"""What :meth:`hactl.render.etcd_pki.EtcdPKI.member_files` gives a member, as the plan shows it."""


@dataclass(frozen=True)
class InstallEtcdCerts(Step):
    kind: ClassVar[str] = "install_etcd_certs"
    order: ClassVar[int] = 11
    ca_host: str = ""
    timeout: float = 60.0

    def commands(self) -> list[str]:
        return [
            cmd.shown(cmd.all_exist(REQUIRED), "all there: nothing to do"),
            *shown_find_ca(self.ca_host),
            *shown_read_ca(self.ca_host),
            "(in memory) issue its server, peer and healthcheck-client certificates",
            cmd.shown(cmd.mkdir(hostlayout.ETCD_PKI_DIR)),
            cmd.shown_put(hostlayout.ETCD_CA_KEY, 0o600, "when the CA came from another member"),
            *(cmd.shown_put(path, mode) for path, mode in ISSUED),
        ]

    async def run(self, ctx: StepContext) -> None:
        from hactl.render import etcd_pki  # cryptography: imported when the step runs

        assert self.host is not None
        have = await run(ctx, self.host, cmd.all_exist(REQUIRED), check=False)
        if have.ok:
            ctx.log("etcd certificates already present")
            return
        source = await find_ca_host(ctx, self.ca_host)
        if source is None:
            raise CommandError(NO_CA_KEY, host=self.host, hint=NO_CA_KEY_HINT)
        ca = await read_ca(ctx, source)
        member = await asyncio.to_thread(etcd_pki.issue_member, ca, ctx.cluster.host(self.host))
        files = etcd_pki.EtcdPKI(ca, {self.host: member}, member.healthcheck_client).member_files(self.host)
        await run(ctx, self.host, cmd.mkdir(hostlayout.ETCD_PKI_DIR))
        if source != self.host:
            await put(ctx, self.host, hostlayout.ETCD_CA_KEY, ca.key_pem(), 0o600)
        for f in files:
            await put(ctx, self.host, f.path, f.reveal().encode(), f.mode)
        ctx.log("etcd certificates installed", files=len(files))
