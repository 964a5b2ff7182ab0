"""ConfigureHAProxy: render, upload to a temp file, ``haproxy -c``, atomic move, graceful reload.

After a successful start or reload the step writes the file's sha256 to
:data:`~hactl.facts.haproxy.LOADED_MARKER` (/run/hactl/haproxy.sha256): the probe compares it
with the file's hash to tell "written" from "loaded". A file that is already right but was
never loaded (an apply killed between ``mv`` and ``reload``, a reload that failed) is reloaded
too (graceful; never a restart), decided on the host exactly as the probe decides it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from typing import ClassVar

from hactl import hostlayout
from hactl.errors import CommandError
from hactl.facts.base import FactParseError
from hactl.facts.haproxy import ACTIVE_VAR, HAProxyFiles
from hactl.facts.haproxy import admin_script as haproxy_admin
from hactl.plan import commands as cmd
from hactl.plan import desired
from hactl.plan.remote import put, run
from hactl.plan.step import Step, StepContext
from hactl.render.haproxy import BACKEND
from hactl.vocabulary import Action


def ready_command(server: str) -> str:
    """HAProxy's runtime command putting a master's server of the API backend back in rotation."""
    return f"set server {BACKEND}/{server} state ready"


RELOAD_SETTLE = 10.0
"""Seconds a ``reloading`` haproxy unit may take to be ``active`` again after the reload."""
NEW = hostlayout.HAPROXY_CFG_NEW


def loaded_check() -> str:
    """The probe's own ``haproxy.files`` section, run as if haproxy is active: has the running
    haproxy loaded the file as it is?"""
    return f"{ACTIVE_VAR}=active\n{HAProxyFiles().script()}"


@dataclass(frozen=True)
class ConfigureHAProxy(Step):
    kind: ClassVar[str] = "configure_haproxy"
    order: ClassVar[int] = 30
    action: Action = Action.UPDATE
    timeout: float = 60.0
    ready_servers: tuple[str, ...] = ()
    """Masters' servers the probe saw held out of the API backend at runtime (``DRAIN``/``MAINT``
    through the admin socket): put back (``state ready``) unless a reload or start does it."""

    def commands(self) -> list[str]:
        return [
            cmd.shown(cmd.sha256sum(hostlayout.HAPROXY_CFG), "already the rendered file?"),
            cmd.shown(cmd.systemctl("is-active", "--quiet", "haproxy")),
            cmd.shown(loaded_check(), "the file unchanged and haproxy running: loaded as it is? "
                      "(the probe's haproxy.files section)"),
            cmd.shown_put(NEW, 0o644, "rendered; when the file changes"),
            cmd.shown(cmd.haproxy_check(NEW)),
            cmd.shown(cmd.remove(NEW), "only when haproxy -c refuses it"),
            cmd.shown(cmd.move(NEW, hostlayout.HAPROXY_CFG)),
            cmd.shown(cmd.systemctl("enable", "--now", "haproxy"), "when haproxy is not running"),
            cmd.shown(cmd.systemctl("reload", "haproxy"),
                      "graceful; when the file changed or the running haproxy never loaded it"),
            cmd.shown(cmd.systemctl("is-active", "haproxy"),
                      f"repeated while 'reloading', for at most {RELOAD_SETTLE:g} s"),
            cmd.shown_put(hostlayout.HAPROXY_LOADED_MARKER, 0o644, "the loaded file's sha256"),
            *(cmd.shown(haproxy_admin(ready_command(server)),
                        f"{ready_command(server)} on the admin socket, unless a reload or "
                        "start above put it back already")
              for server in self.ready_servers),
        ]

    async def _never_loaded(self, ctx: StepContext) -> bool:
        """The running haproxy has not loaded the file as it is (the probe's own test)."""
        assert self.host is not None
        found = await run(ctx, self.host, loaded_check(), check=False)
        if not found.ok:
            return False
        try:
            return HAProxyFiles().parse(found.stdout).loaded is False
        except FactParseError:
            return False

    async def _wait_active(self, ctx: StepContext) -> None:
        """haproxy runs ``-Ws`` under a Type=notify unit: after a reload it sends RELOADING=1
        and, once the new workers run, READY=1 (130-165 ms measured with haproxy 2.6); systemd
        shows the unit as ``reloading`` in between. That state is waited out (for at most
        :data:`RELOAD_SETTLE` seconds); any other state than ``active`` fails the step at once."""
        host = self.host or ""
        deadline = time.monotonic() + RELOAD_SETTLE
        while True:
            res = await run(ctx, host, cmd.systemctl("is-active", "haproxy"), check=False)
            state = res.stdout.strip() or "not active"
            if state == "active":
                return
            if state != "reloading" or time.monotonic() >= deadline:
                raise CommandError(f"haproxy is {state} after the change"
                                   + (f" (still after {RELOAD_SETTLE:g}s)" if state == "reloading" else ""),
                                   host=host, transient=True)
            await asyncio.sleep(0.2)

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        text = desired.haproxy_cfg(ctx.cluster)
        want = hashlib.sha256(text.encode()).hexdigest()
        current = await run(ctx, self.host, cmd.sha256sum(hostlayout.HAPROXY_CFG), check=False)
        changed = not (current.ok and current.stdout.split()[:1] == [want])
        active = (await run(ctx, self.host, cmd.systemctl("is-active", "--quiet", "haproxy"),
                            check=False)).ok
        stale = active and not changed and await self._never_loaded(ctx)
        if changed:
            await put(ctx, self.host, NEW, text, 0o644)
            check = await run(ctx, self.host, cmd.haproxy_check(NEW), check=False)
            if not check.ok:
                await run(ctx, self.host, cmd.remove(NEW), check=False)
                raise CommandError(
                    "haproxy -c refused the rendered configuration: "
                    + (check.stderr.strip().splitlines() or ["(no output)"])[-1],
                    host=self.host, argv=cmd.haproxy_check(NEW)[:],  # type: ignore[arg-type]
                    stderr=check.stderr, exit_status=check.exit_status,
                )
            await run(ctx, self.host, cmd.move(NEW, hostlayout.HAPROXY_CFG))
        if not active:
            await run(ctx, self.host, cmd.systemctl("enable", "--now", "haproxy"))
        elif changed or stale:
            await run(ctx, self.host, cmd.systemctl("reload", "haproxy"))
        await self._wait_active(ctx)
        if changed or stale or not active:
            await put(ctx, self.host, hostlayout.HAPROXY_LOADED_MARKER, f"{want}\n", 0o644)
        else:  # a (re)load starts every server from the configuration: nothing left held out
            for server in self.ready_servers:
                res = await run(ctx, self.host, haproxy_admin(ready_command(server)), check=False)
                answer = (res.stdout + res.stderr).strip()
                if not res.ok or answer:
                    raise CommandError(f"haproxy on {self.host} refused `{ready_command(server)}`: "
                                       f"{answer or 'exit ' + str(res.exit_status)}", host=self.host,
                                       transient=True)
        ctx.log("haproxy configured", changed=changed, started=not active, reloaded_stale=stale,
                put_back=list(self.ready_servers))
