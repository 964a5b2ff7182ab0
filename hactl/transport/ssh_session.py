"""One command on one SSH channel, with a deadline, an output cap and a kill that is confirmed.

:func:`run_session` opens a session, sends the wrapped command (:mod:`hactl.transport.
process_group`), feeds stdin, and reads stdout and stderr as they come, at most
:data:`MAX_OUTPUT` bytes each. The wrapper's first stderr line names the command's process
group. When the deadline passes, the task is cancelled, or a stream passes the cap, the group
is killed over a fresh channel and the kill is confirmed before anything is raised:

- timeout → :class:`CommandTimeout` (``stopped`` says whether the group is known to be gone);
- cap passed → :class:`OutputLimitError` (a permanent :class:`~hactl.errors.CommandError`);
- cancelled → the kill runs shielded (a second cancel does not stop it: the transport's
  ``aclose`` waits for it), then ``CancelledError`` propagates as it must.

When the connection itself is gone nothing can be killed over it:

- the channel could not be opened because the connection was already closed →
  :class:`SessionNotOpened` (nothing was sent: the command never started);
- the connection died once the session was open (the exec request may have gone out) →
  :class:`SessionLost` with the process group and its leader's start time when the wrapper's
  first line had arrived (the transport stops that group over its next connection).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from hactl.errors import CommandError
from hactl.log import get_logger
from hactl.transport.process_group import KILL_WAIT, kill_script, take_tag

MAX_OUTPUT = 8 * 1024 * 1024
"""Bytes of stdout (and of stderr) one command may print; hactl's largest honest answer (the
probe of a master: certificates, haproxy.cfg, kubectl's answer) is well below 1 MiB."""
STOP_TIMEOUT = KILL_WAIT + 10.0
"""Seconds to learn the process group, open a channel and run the kill script."""
_CHUNK = 65536

_log = get_logger()


class OutputLimitError(CommandError):
    """A command printed more than the transport reads (:data:`MAX_OUTPUT`)."""


@dataclass
class CommandTimeout(Exception):
    """The command overran its timeout; ``stopped``: its process group is known to be gone."""

    stopped: bool
    pgid: int | None


@dataclass
class SessionNotOpened(Exception):
    """The channel could not be opened because the connection is closed: nothing was sent."""

    reason: str


@dataclass
class SessionLost(Exception):
    """The connection died after the session was opened: the command may have started (and may
    still run, if only the connection died). ``pgid``/``start`` identify its process group when
    the wrapper's first line had arrived."""

    reason: str
    pgid: int | None
    start: int | None


LOST_ERRORS = (asyncssh.DisconnectError, asyncssh.ConnectionLost, BrokenPipeError, ConnectionError)
"""What asyncssh raises on a channel whose connection died (ConnectionLost is a DisconnectError;
writing to a closed channel gives BrokenPipeError)."""


def connection_gone(conn: Any) -> bool:
    """True once asyncssh knows the connection is closed (or closing)."""
    closed = getattr(conn, "is_closed", None)
    return bool(closed()) if callable(closed) else False


def _not_opened(conn: Any, exc: asyncssh.ChannelOpenError) -> bool:
    """A channel refused because the connection is closed (not by the server, e.g. MaxSessions):
    asyncssh raises this before sending anything."""
    return exc.reason == "SSH connection closed" or connection_gone(conn)


@dataclass
class _Overflow(Exception):
    stream: str


@dataclass
class _Session:
    proc: Any
    limit: int
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)
    pgid: int | None = None
    start: int | None = None
    """The process group leader's start time (clock ticks since the host booted)."""
    tagged: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the first stderr line was seen (or stderr ended): only the stderr pump sets it."""

    async def _pump(self, stream: Any, name: str) -> None:
        buf = self.out if name == "stdout" else self.err
        while True:
            chunk = await stream.read(_CHUNK)
            if not chunk:
                if name == "stderr":
                    self.tagged.set()
                return
            buf += chunk
            if name == "stderr" and not self.tagged.is_set() and b"\n" in buf:
                self.pgid, self.start, rest = take_tag(bytes(buf))
                buf[:] = rest
                self.tagged.set()
            if len(buf) > self.limit:
                raise _Overflow(name)


async def _drain(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def stop_group(
    conn: Any, session: _Session, wrap_admin: Callable[[str], str], kills: asyncio.Semaphore
) -> bool:
    """Kill the session's process group on the host; True once it is known to be gone."""
    try:
        async with asyncio.timeout(STOP_TIMEOUT):
            await session.tagged.wait()
            if session.pgid is None:
                # no tag: the wrapper never ran (exec refused) or the channel already ended
                return bool(session.proc.exit_status is not None or session.proc.is_closing())
            async with kills:
                done = await conn.run(wrap_admin(kill_script(session.pgid)), check=False)
            if done.exit_status != 0:
                _log.warning("kill.unconfirmed", pgid=session.pgid, stderr=str(done.stderr)[-200:])
            return bool(done.exit_status == 0)
    except (TimeoutError, OSError, Exception) as exc:  # the connection may be gone
        _log.warning("kill.failed", pgid=session.pgid, error=f"{type(exc).__name__}: {exc}")
        return False
    finally:
        session.proc.close()


async def run_session(
    conn: Any,
    wire: str,
    data: bytes | None,
    timeout: float | None,
    *,
    wrap_admin: Callable[[str], str],
    kills: asyncio.Semaphore,
    pending: set[asyncio.Task[bool]],
    limit: int = MAX_OUTPUT,
) -> tuple[int, bytes, bytes]:
    """Run ``wire`` (already wrapped) → ``(exit status or -1, stdout, stderr)``.

    ``wrap_admin`` turns a kill script into the line to send (``sudo`` for a non-root user);
    ``kills`` bounds the kill channels; ``pending`` receives kills still running when this
    task is cancelled a second time (the transport awaits them before closing)."""
    session: _Session | None = None
    tasks: list[asyncio.Task[None]] = []
    try:
        async with asyncio.timeout(timeout):
            try:
                proc = await conn.create_process(wire, encoding=None)
            except asyncssh.ChannelOpenError as refused:
                if _not_opened(conn, refused):
                    raise SessionNotOpened(refused.reason) from refused
                raise
            session = _Session(proc, limit)
            tasks = [
                asyncio.create_task(session._pump(proc.stdout, "stdout"), name="ssh:stdout"),
                asyncio.create_task(session._pump(proc.stderr, "stderr"), name="ssh:stderr"),
            ]
            if data:
                proc.stdin.write(data)
            proc.stdin.write_eof()
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if (failure := task.exception()) is not None:
                    raise failure
            await proc.wait_closed()
            if proc.exit_status is None and proc.exit_signal is None and connection_gone(conn):
                raise SessionLost("the channel closed without an exit status", None, None)
    except TimeoutError:
        # no session yet: the exec request may have gone out, with no process group known
        stopped = session is not None and await stop_group(conn, session, wrap_admin, kills)
        raise CommandTimeout(stopped, session.pgid if session else None) from None
    except _Overflow as exc:
        assert session is not None
        stopped = await stop_group(conn, session, wrap_admin, kills)
        raise OutputLimitError(
            f"printed more than {limit // (1024 * 1024)} MiB on {exc.stream}; hactl stopped "
            f"reading and {'killed it' if stopped else 'could not confirm that it was killed'}",
            transient=False,
            hint="look at what the command reads on the host (a huge or wrong file?)",
        ) from None
    except SessionLost as lost:
        if session is None:
            raise
        raise SessionLost(lost.reason, session.pgid, session.start) from None
    except LOST_ERRORS as exc:
        raise SessionLost(
            str(exc) or type(exc).__name__,
            session.pgid if session else None,
            session.start if session else None,
        ) from exc
    except asyncio.CancelledError:
        if session is not None:
            stopping = asyncio.ensure_future(stop_group(conn, session, wrap_admin, kills))
            pending.add(stopping)
            stopping.add_done_callback(pending.discard)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(stopping)
        raise
    finally:
        await _drain(tasks)
    status = proc.exit_status
    return (-1 if status is None else status), bytes(session.out), bytes(session.err)
