"""InstallEtcdClientCerts: give the first master the etcd CA and its apiserver-etcd-client pair."""

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

ISSUED = ((hostlayout.K8S_ETCD_CA, 0o644), (hostlayout.APISERVER_ETCD_CLIENT_CERT, 0o644),
          (hostlayout.APISERVER_ETCD_CLIENT_KEY, 0o600))
"""What :meth:`hactl.render.etcd_pki.EtcdPKI.master_files` gives a master (kubeadm's
``etcd.external`` paths)."""


@dataclass(frozen=True)
class InstallEtcdClientCerts(Step):
    kind: ClassVar[str] = "install_etcd_client_certs"
    order: ClassVar[int] = 40
    ca_host: str = ""
    timeout: float = 60.0

    def commands(self) -> list[str]:
        return [
            cmd.shown(cmd.all_exist([path for path, _ in ISSUED]), "all there: nothing to do"),
            *shown_find_ca(self.ca_host),
            *shown_read_ca(self.ca_host),
            "(in memory) issue the API server's etcd client certificate",
            cmd.shown(cmd.mkdir(hostlayout.K8S_ETCD_PKI, "0755")),
            *(cmd.shown_put(path, mode) for path, mode in ISSUED),
        ]

    async def run(self, ctx: StepContext) -> None:
        from hactl.render import etcd_pki  # cryptography: imported when the step runs

        assert self.host is not None
        have = await run(ctx, self.host, cmd.all_exist([path for path, _ in ISSUED]), check=False)
        if have.ok:
            ctx.log("etcd client certificates already present")
            return
        source = await find_ca_host(ctx, self.ca_host)
        if source is None:
            raise CommandError(NO_CA_KEY, host=self.host, hint=NO_CA_KEY_HINT)
        ca = await read_ca(ctx, source)
        client = await asyncio.to_thread(etcd_pki.issue_apiserver_etcd_client, ca)
        files = etcd_pki.EtcdPKI(ca, {}, client).master_files()
        await run(ctx, self.host, cmd.mkdir(hostlayout.K8S_ETCD_PKI, "0755"))
        for f in files:
            await put(ctx, self.host, f.path, f.reveal().encode(), f.mode)
        ctx.log("etcd client certificates installed")
