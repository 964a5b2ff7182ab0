"""InitControlPlane: ``kubeadm init --config … --upload-certs`` on the first master, once.

The certificate key is hactl's (made in memory, so it is known without parsing output) and goes
in ``InitConfiguration.certificateKey`` of a 0600 file that exists only while init runs; the
long-lived ``/etc/hactl/kubeadm-config.yaml`` holds no key (``upload-certs`` reuses it and must
make a fresh key each time)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import ClassVar

from hactl import hostlayout
from hactl.diff import client_url
from hactl.errors import CommandError, PlanError
from hactl.plan import commands as cmd
from hactl.plan import desired
from hactl.plan.join_ops import (
    ensure_ca_hash,
    parse_ca_hash,
    parse_token,
    remember_key,
    remember_token,
    run_with_secrets,
    secret_file,
    shown_ensure_ca_hash,
    shown_secret_file,
)
from hactl.plan.remote import parse_json, put, run
from hactl.plan.step import Step, StepContext
from hactl.plan.steps.complete_init import api_can_come, shown_api_comes, wait_ready
from hactl.sensitive import MASK, Sensitive

P = cmd.placeholder


@dataclass(frozen=True)
class InitControlPlane(Step):
    kind: ClassVar[str] = "init_control_plane"
    order: ClassVar[int] = 41
    timeout: float = 900.0

    def commands(self) -> list[str]:
        return [
            cmd.shown(cmd.file_exists(hostlayout.ADMIN_CONF), "there: an earlier init stopped half-way, "
                      "refused (plan again)"),
            cmd.shown(cmd.registry_count(P("client URL of each etcd member in turn")),
                      "external etcd, on the members until one answers: refused if it holds /registry keys"),
            cmd.shown(cmd.mkdir(hostlayout.HACTL_ETC)),
            cmd.shown_put(hostlayout.KUBEADM_CONFIG, 0o600, "InitConfiguration + ClusterConfiguration, no secret"),
            cmd.shown(cmd.systemctl("enable", "kubelet")),
            *shown_secret_file(hostlayout.KUBEADM_INIT_CONFIG, f"the same + certificateKey: {MASK}",
                               cmd.kubeadm_init(), "init"),
            "keep the certificate key, token and CA hash in memory",
            *shown_ensure_ca_hash(self.host or ""),
            *shown_api_comes(),
        ]

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        cluster = ctx.cluster
        if (await run(ctx, self.host, cmd.file_exists(hostlayout.ADMIN_CONF), check=False)).ok:
            # kubeadm init is never re-run, and a run that did not see it finish must not pass
            # for done (the plan saw no admin.conf: an init of this apply stopped after it).
            raise CommandError(
                "admin.conf exists but kubeadm init did not finish in this run (an earlier attempt "
                "stopped half-way)", host=self.host, step=self.id,
                hint="run `hactl plan` again: it completes an interrupted init phase by phase")
        if cluster.etcd.topology == "external":
            await self._refuse_foreign_registry(ctx)
        await run(ctx, self.host, cmd.mkdir(hostlayout.HACTL_ETC))
        await put(ctx, self.host, hostlayout.KUBEADM_CONFIG,
                  desired.kubeadm_init_config(cluster, cluster.host(self.host)), 0o600)
        await run(ctx, self.host, cmd.systemctl("enable", "kubelet"))  # survive reboots
        key = Sensitive(secrets.token_hex(32))  # kubeadm's format: 32 random bytes, hex
        config = desired.kubeadm_init_secret_config(cluster, cluster.host(self.host), key)
        async with secret_file(ctx, self.host, hostlayout.KUBEADM_INIT_CONFIG, config) as path:
            result = await run_with_secrets(ctx, self.host, cmd.kubeadm_init(path), [key],
                                            timeout=self.timeout - 60)
        remember_key(ctx, key)
        token = parse_token(result.stdout)
        if token is not None:
            remember_token(ctx, token)
        ctx.secrets.ca_cert_hash = parse_ca_hash(result.stdout)
        await ensure_ca_hash(ctx, self.host)
        ctx.log("kubeadm init done", token_captured=token is not None)
        # fail at once (not after the whole /readyz wait) when nothing can start the API server
        await api_can_come(ctx, self.host, self.id)
        await wait_ready(ctx, self.host)

    async def _refuse_foreign_registry(self, ctx: StepContext) -> None:
        """Rule 4 on fresh facts: the etcd must hold no /registry data before init."""
        cluster = ctx.cluster
        via = cluster.etcd_members[0]
        for member in cluster.etcd_members:
            res = await run(ctx, member.name, cmd.registry_count(client_url(cluster, member)), check=False)
            if res.ok:
                via = member
                data = parse_json(res.stdout)
                count = int(data.get("count", 0)) if isinstance(data, dict) else 0
                if count:
                    raise PlanError(
                        f"etcd already holds {count} /registry keys of another cluster; "
                        "refusing kubeadm init (see `hactl plan` for how to wipe it by hand)",
                        host=via.name, step=self.id)
                return
        raise CommandError("no etcd member answered the /registry check", host=via.name, transient=True)
