"""RewriteEtcdServers: point one master's kube-apiserver at the spec's etcd members.

kubeadm writes ``--etcd-servers`` into /etc/kubernetes/manifests/kube-apiserver.yaml once, at
init or join, from ``etcd.external.endpoints``; nothing updates it when the etcd membership
changes. The step, on one master (the planner chains the masters one at a time):

1. checks that every URL of the new list is the client URL of a started voting member that
   answers ``endpoint health``: the new list never names a member that is not serving (the
   members the plan removes next are still members then, and not in the list);
2. rewrites only the ``--etcd-servers=`` argument of the manifest (the rest is kept byte for
   byte), through a file under /etc/kubernetes/tmp and an atomic ``mv`` (the kubelet reads the
   manifests directory and must never see half a file); the previous manifest is kept beside
   it as ``kube-apiserver.yaml.hactl-<UTC time>``;
3. takes the master out of every load balancer (HAProxy's runtime ``state drain``: new
   connections go to the other masters) before the ``mv`` restarts its API server;
4. waits until the kubelet runs the new manifest (the API server's mirror Pod lists the new
   ``--etcd-servers`` and is Ready) and this master's own API server answers ``/readyz``, puts
   it back (``state ready``, also when a wait failed), waits until every load balancer has it
   UP and the API answers ``/readyz`` through them: the next master is not touched before.

A manifest that already lists the spec's members (a rerun after an interruption) is not written
again; the waits still run.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from hactl import hostlayout
from hactl.diff import url_key
from hactl.errors import CommandError
from hactl.facts.base import FactParseError
from hactl.facts.haproxy import HAProxyStats
from hactl.facts.haproxy import admin_script as haproxy_admin
from hactl.plan import commands as cmd
from hactl.plan.etcd_ops import health_by_endpoint, list_members, shown_list_members
from hactl.plan.remote import parse_json, put, run, wait_for
from hactl.plan.step import Step, StepContext
from hactl.render.haproxy import BACKEND
from hactl.transport.base import Argv
from hactl.vocabulary import Action

APISERVER_MANIFEST = hostlayout.APISERVER_MANIFEST
K8S_TMP = hostlayout.K8S_TMP
"""kubeadm's own scratch directory (its upgrade backups live there); same file system as the
manifests, so the ``mv`` is atomic."""
NEW_MANIFEST = f"{K8S_TMP}/hactl-kube-apiserver.yaml.new"

DRAIN_SETTLE = 1.0
"""Seconds between taking the master out of the load balancers and restarting its API server:
the requests the load balancers already sent it finish (new ones go to the other masters)."""


_FLAG = re.compile(r"^(?P<head>[ \t]*-[ \t]+)(?P<q>[\"']?)--etcd-servers=(?P<value>[^\s\"']*)"
                   r"(?P=q)(?P<tail>[ \t]*)$", re.MULTILINE)


def with_etcd_servers(manifest: str, servers: tuple[str, ...]) -> str:
    """``manifest`` with its one ``- --etcd-servers=…`` argument set to ``servers`` (every other
    byte kept). ValueError when the manifest has no such argument, or more than one."""
    found = list(_FLAG.finditer(manifest))
    if len(found) != 1:
        raise ValueError("no --etcd-servers argument" if not found
                         else f"{len(found)} --etcd-servers arguments")
    m = found[0]
    line = f"{m['head']}{m['q']}--etcd-servers={','.join(servers)}{m['q']}{m['tail']}"
    return manifest[:m.start()] + line + manifest[m.end():]


def _mirror_state(pod: Any, flag: str) -> str | None:
    """None when the mirror Pod runs with ``flag`` and is Ready; else what is missing."""
    if not isinstance(pod, dict):
        return "the mirror Pod could not be read"
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    args = [*(containers[0].get("command") or []), *(containers[0].get("args") or [])]
    if flag not in args:
        return "the kubelet has not started the API server from the new manifest yet"
    conditions = (pod.get("status") or {}).get("conditions") or []
    if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
        return "the new API server is not Ready yet"
    return None


@dataclass(frozen=True)
class RewriteEtcdServers(Step):
    kind: ClassVar[str] = "rewrite_etcd_servers"
    order: ClassVar[int] = 28
    action: Action = Action.UPDATE
    timeout: float = 420.0
    servers: tuple[str, ...] = ()
    """The client URLs written into ``--etcd-servers`` (the spec's members, in its order)."""
    via: str = ""
    """An etcd member to check the members' health through."""
    address_url: str = ""
    """This master's own API server (``https://ADDRESS:6443``), asked for ``/readyz``."""

    @property
    def flag(self) -> str:
        return f"--etcd-servers={','.join(self.servers)}"

    def _mirror(self) -> Argv:
        return cmd.kubectl("get", "pod", "-n", "kube-system", f"kube-apiserver-{self.host}",
                           "-o", "json")

    def _own_readyz(self) -> Argv:
        return cmd.kubectl("--server", self.address_url, "get", "--raw", "/readyz")

    @staticmethod
    def _backup(stamp: str) -> Argv:
        return ("cp", "-p", APISERVER_MANIFEST, f"{K8S_TMP}/kube-apiserver.yaml.hactl-{stamp}")

    def commands(self) -> list[str]:
        return [
            shown_list_members(self.via, note="every URL to write is a started voter's"),
            cmd.shown(cmd.endpoint_health(list(self.servers)),
                      "each healthy; both repeated until they are (at most 120 s)"),
            cmd.shown(cmd.read_files(APISERVER_MANIFEST)),
            cmd.shown(cmd.mkdir(K8S_TMP, "0700"), "when the manifest is not right yet"),
            cmd.shown_put(NEW_MANIFEST, 0o600, f"the manifest with {self.flag}"),
            cmd.shown(self._backup(cmd.placeholder("UTC time")), "the manifest as it was"),
            cmd.shown(haproxy_admin(self._lb("drain")),
                      f"on each load balancer, before the restart: {self._lb('drain')}"),
            cmd.shown(cmd.move(NEW_MANIFEST, APISERVER_MANIFEST),
                      "the kubelet restarts the API server"),
            cmd.shown(self._mirror(), "until it lists the new --etcd-servers and is Ready"),
            cmd.shown(self._own_readyz(), "this master's API server"),
            cmd.shown(haproxy_admin(self._lb("ready")),
                      f"on each load balancer, always (also when a wait fails): {self._lb('ready')}"),
            cmd.shown(HAProxyStats().script(), "on each load balancer, until its backend for "
                      "this master is UP (the next master leaves only then)"),
            cmd.shown(cmd.readyz(), "through the load balancer"),
        ]

    def _lb(self, state: str) -> str:
        return f"set server {BACKEND}/{self.host} state {state}"

    async def _lb_state(self, ctx: StepContext, state: str) -> None:
        """The master's backend on every load balancer to ``state`` (all at once)."""
        command = haproxy_admin(self._lb(state))

        async def one(lb: str) -> None:
            res = await run(ctx, lb, command, check=False)
            answer = (res.stdout + res.stderr).strip()
            if not res.ok or answer:
                raise CommandError(f"haproxy on {lb} refused `{self._lb(state)}`: "
                                   f"{answer or 'exit ' + str(res.exit_status)}", host=lb,
                                   step=self.id, transient=True)

        await asyncio.gather(*(one(h.name) for h in ctx.cluster.load_balancer.hosts))

    async def _lb_up(self, ctx: StepContext) -> None:
        """Wait until every load balancer's health checks have this master UP again."""
        fact = HAProxyStats()

        async def up(lb: str) -> str | None:
            res = await run(ctx, lb, fact.script(), check=False)
            try:
                servers = fact.parse(res.stdout) if res.ok else ()
            except FactParseError as exc:
                return f"{lb}: {exc}"
            state = next((s.status for s in servers if s.backend == BACKEND and s.server == self.host),
                         "not listed")
            return None if state == "UP" else f"{lb} has it {state}"

        async def all_up() -> str | None:
            answers = await asyncio.gather(*(up(h.name) for h in ctx.cluster.load_balancer.hosts))
            return "; ".join(a for a in answers if a) or None

        await wait_for(f"the load balancers to have {self.host} UP", all_up, timeout=60.0,
                       host=self.host)

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        host = self.host
        members = list(ctx.cluster.etcd_members)
        via = next((h for h in members if h.name == self.via), members[0])

        async def servers_healthy() -> str | None:
            listed = await list_members(ctx, via)
            voters = {url_key(u) for m in listed if m.name and not m.is_learner for u in m.client_urls}
            missing = [u for u in self.servers if url_key(u) not in voters]
            if missing:
                return f"not the client URL of a started voting member: {', '.join(missing)}"
            res = await run(ctx, via.name, cmd.endpoint_health(list(self.servers)), check=False)
            answers = health_by_endpoint(res.stdout)
            sick = [u for u in self.servers if not answers.get(u, False)]
            return f"endpoint health false on {', '.join(sick)}" if sick else None

        # the list written never names a member that is not serving (the members the plan
        # removes next are still listed by etcd: they are not in the new list)
        await wait_for("every member the new --etcd-servers lists to be a healthy voter",
                       servers_healthy, timeout=120.0, host=via.name)
        current = (await run(ctx, host, cmd.read_files(APISERVER_MANIFEST))).stdout
        try:
            wanted = with_etcd_servers(current, self.servers)
        except ValueError as exc:
            raise CommandError(
                f"{APISERVER_MANIFEST} cannot be rewritten: {exc}", host=host, step=self.id,
                hint="the manifest is not kubeadm's: set --etcd-servers by hand") from None
        written = wanted != current

        async def mirror() -> str | None:
            res = await run(ctx, host, self._mirror(), check=False)
            return _mirror_state(parse_json(res.stdout), self.flag) if res.ok else (
                (res.stderr.strip().splitlines() or ["kubectl failed"])[-1])

        async def own() -> str | None:
            res = await run(ctx, host, self._own_readyz(), check=False)
            return None if res.ok and res.stdout.strip() == "ok" else "its /readyz is not ok"

        async def through_lb() -> str | None:
            res = await run(ctx, host, cmd.readyz(), check=False)
            return None if res.ok and res.stdout.strip() == "ok" else "/readyz through the LB is not ok"

        try:
            if written:
                stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                await run(ctx, host, cmd.mkdir(K8S_TMP, "0700"))
                await put(ctx, host, NEW_MANIFEST, wanted, 0o600)
                await run(ctx, host, self._backup(stamp))
                # out of the load balancers first: the restart drops no request they send
                await self._lb_state(ctx, "drain")
                await asyncio.sleep(DRAIN_SETTLE)
                await run(ctx, host, cmd.move(NEW_MANIFEST, APISERVER_MANIFEST))
            await wait_for(f"the API server on {host} to run with the new --etcd-servers", mirror,
                           timeout=180.0, host=host)
            await wait_for(f"/readyz of the API server on {host}", own, timeout=60.0, host=host)
        finally:
            # back into the load balancers, also when a wait failed (a broken API server is
            # marked down by their health checks) or a run before this one stopped in between
            await self._lb_state(ctx, "ready")
        await self._lb_up(ctx)
        await wait_for("/readyz through the load balancer", through_lb, timeout=60.0, host=host)
        ctx.log("etcd servers rewritten", written=written, servers=len(self.servers))
