"""The small async helpers steps use: run a command on a host, poll until a condition holds.

Everything goes through ``ctx.transport(host)``; nothing here opens connections or prints.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from hactl.errors import CommandError, HactlError
from hactl.plan.step import StepContext
from hactl.transport.base import Command, Result


async def run(
    ctx: StepContext,
    host: str,
    command: Command,
    *,
    stdin: bytes | str | None = None,
    timeout: float | None = 120.0,
    check: bool = True,
) -> Result:
    return await ctx.transport(host).run(command, stdin=stdin, timeout=timeout, check=check)


async def put(ctx: StepContext, host: str, path: str, data: bytes | str, mode: int = 0o644) -> None:
    await ctx.transport(host).put(path, data.encode() if isinstance(data, str) else data, mode)


async def wait_for(
    what: str,
    probe: Callable[[], Awaitable[str | None]],
    *,
    timeout: float,
    interval: float = 1.0,
    host: str | None = None,
) -> None:
    """Call ``probe`` until it returns None (condition holds); it returns the reason it does not
    hold otherwise. On timeout raise a transient CommandError with the last reason."""
    deadline = time.monotonic() + timeout
    last = "not checked yet"
    while True:
        try:
            reason = await probe()
        except HactlError as exc:
            reason = str(exc)
        if reason is None:
            return
        last = reason
        if time.monotonic() >= deadline:
            raise CommandError(
                f"timed out after {timeout:.0f}s waiting for {what}: {last}",
                host=host,
                transient=True,
            )
        await asyncio.sleep(interval)


def parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
