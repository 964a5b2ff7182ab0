"""ConfigureHAProxy: render, upload to a temp file, ``haproxy -c``, atomic move, graceful reload."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar

from hactl.errors import CommandError
from hactl.plan import commands as cmd
from hactl.plan import desired
from hactl.plan.remote import put, run
from hactl.plan.step import Action, Step, StepContext


@dataclass(frozen=True)
class ConfigureHAProxy(Step):
    kind: ClassVar[str] = "configure_haproxy"
    order: ClassVar[int] = 30
    action: Action = "update"
    timeout: float = 60.0

    def commands(self) -> list[str]:
        return [
            f"put {cmd.HAPROXY_NEW} (rendered)",
            f"haproxy -c -f {cmd.HAPROXY_NEW}",
            f"mv -f {cmd.HAPROXY_NEW} {cmd.HAPROXY_CFG}",
            "systemctl reload haproxy (graceful; only when the file changed) "
            "or systemctl enable --now haproxy",
        ]

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        text = desired.haproxy_cfg(ctx.cluster)
        want = hashlib.sha256(text.encode()).hexdigest()
        current = await run(ctx, self.host, cmd.sha256sum(cmd.HAPROXY_CFG), check=False)
        changed = not (current.ok and current.stdout.split()[:1] == [want])
        active = (await run(ctx, self.host, cmd.systemctl("is-active", "--quiet", "haproxy"),
                            check=False)).ok
        if changed:
            await put(ctx, self.host, cmd.HAPROXY_NEW, text, 0o644)
            check = await run(ctx, self.host, cmd.haproxy_check(cmd.HAPROXY_NEW), check=False)
            if not check.ok:
                await run(ctx, self.host, cmd.remove(cmd.HAPROXY_NEW), check=False)
                raise CommandError(
                    "haproxy -c refused the rendered configuration: "
                    + (check.stderr.strip().splitlines() or ["(no output)"])[-1],
                    host=self.host, argv=cmd.haproxy_check(cmd.HAPROXY_NEW)[:],  # type: ignore[arg-type]
                    stderr=check.stderr, exit_status=check.exit_status,
                )
            await run(ctx, self.host, cmd.move(cmd.HAPROXY_NEW, cmd.HAPROXY_CFG))
        if not active:
            await run(ctx, self.host, cmd.systemctl("enable", "--now", "haproxy"))
        elif changed:
            await run(ctx, self.host, cmd.systemctl("reload", "haproxy"))
        state = await run(ctx, self.host, cmd.systemctl("is-active", "haproxy"), check=False)
        if state.stdout.strip() != "active":
            raise CommandError(f"haproxy is {state.stdout.strip() or 'not active'} after the change",
                               host=self.host, transient=True)
        ctx.log("haproxy configured", changed=changed, started=not active)
