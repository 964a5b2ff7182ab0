"""InstallEtcdClientCerts: give the first master the etcd CA and its apiserver-etcd-client pair."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import ClassVar

from hactl.errors import CommandError
from hactl.plan import commands as cmd
from hactl.plan.etcd_ops import NO_CA_KEY, NO_CA_KEY_HINT, find_ca_host, read_ca
from hactl.plan.remote import put, run
from hactl.plan.step import Step, StepContext


@dataclass(frozen=True)
class InstallEtcdClientCerts(Step):
    kind: ClassVar[str] = "install_etcd_client_certs"
    order: ClassVar[int] = 40
    ca_host: str = ""
    timeout: float = 60.0

    def commands(self) -> list[str]:
        return [
            f"read the etcd CA from {self.ca_host} into memory",
            f"put {cmd.K8S_ETCD_CA}, {cmd.APISERVER_ETCD_CLIENT_CERT} 0644, "
            f"{cmd.APISERVER_ETCD_CLIENT_KEY} 0600",
        ]

    async def run(self, ctx: StepContext) -> None:
        from hactl.render import etcd_pki  # cryptography: imported when the step runs

        assert self.host is not None
        have = await run(ctx, self.host, ("test", "-e", cmd.K8S_ETCD_CA, "-a", "-e",
                                          cmd.APISERVER_ETCD_CLIENT_CERT, "-a", "-e",
                                          cmd.APISERVER_ETCD_CLIENT_KEY), check=False)
        if have.ok:
            ctx.log("etcd client certificates already present")
            return
        source = await find_ca_host(ctx, self.ca_host)
        if source is None:
            raise CommandError(NO_CA_KEY, host=self.host, hint=NO_CA_KEY_HINT)
        ca = await read_ca(ctx, source)
        client = await asyncio.to_thread(etcd_pki.issue_apiserver_etcd_client, ca)
        files = etcd_pki.EtcdPKI(ca, {}, client).master_files()
        await run(ctx, self.host, cmd.mkdir(f"{cmd.K8S_PKI}/etcd", "0755"))
        for f in files:
            await put(ctx, self.host, f.path, f.reveal().encode(), f.mode)
        ctx.log("etcd client certificates installed")
