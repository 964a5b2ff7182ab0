"""The asyncssh transport: one connection per host, reused for every command of a run.

- Channels on a connection are bounded by a semaphore (:data:`MAX_CHANNELS` = 8) below
  OpenSSH's default ``MaxSessions 10``, so parallel steps never get "open failed".
- Settings come from the spec only (``ssh`` defaults + per-host overrides): user, port,
  identity file (else the ssh-agent and the default keys), agent, bastion, connect timeout,
  known_hosts file and policy. ``~/.ssh/config`` is not read: the spec is the whole truth.
- known_hosts files are parsed once and shared (:mod:`hactl.transport.known_hosts`); connection
  options (keys loaded once) are shared by every host with the same settings.
- asyncssh and OS errors become :mod:`hactl.errors` (UnreachableError is transient, AuthError
  and HostKeyError are not), each naming the host and what to do next.
- A connection that closed (the host rebooted, sshd restarted, keepalives unanswered) is
  opened again by the next command, with the same settings and the same known_hosts check (a
  changed key is a HostKeyError, never retried); concurrent commands share one reconnect. A
  command whose session could not be opened on the closed connection (nothing was sent) is sent
  once more on the new one. A command that was running when the connection died is never sent
  again by the transport: it raises (transient when its process group is known: the step's
  retry decides) and the next command on that host, over the new connection, first stops what
  is left of it (:func:`~hactl.transport.process_group.lost_script`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from hactl.concurrency import gather_each
from hactl.errors import (
    CommandError,
    HactlError,
    TransportError,
    UnreachableError,
)
from hactl.log import get_logger, pin_library_loggers
from hactl.spec.models import Cluster, Host
from hactl.transport.base import (
    Command,
    Result,
    check_result,
    display_argv,
    display_command,
    put_script,
    secrets_of,
    wire_command,
    with_sudo,
)
from hactl.transport.known_hosts import KnownHosts, KnownHostsCache, host_pattern
from hactl.transport.process_group import lost_script, wrap
from hactl.transport.ssh_errors import lost_error, map_connect_error, timeout_error
from hactl.transport.ssh_session import (
    STOP_TIMEOUT,
    CommandTimeout,
    OutputLimitError,
    SessionLost,
    SessionNotOpened,
    connection_gone,
    run_session,
)

_log = get_logger()
pin_library_loggers()  # asyncssh logs the wire command (secrets revealed) at INFO

MAX_CHANNELS = 8
"""Concurrent sessions per connection (sshd's MaxSessions defaults to 10)."""
KILL_CHANNELS = 2
"""Sessions kept for killing timed-out commands (8 + 2 = sshd's default MaxSessions)."""
CONNECT_PARALLELISM = 256
"""Connections opened at once (file descriptors and sshd's MaxStartups stay comfortable)."""


@dataclass(frozen=True)
class SSHTarget:
    """Everything needed to reach one host, resolved from the spec."""

    name: str
    address: str
    port: int
    user: str
    identity_file: str | None
    use_agent: bool
    known_hosts_file: str
    host_key_policy: str
    connect_timeout: float
    bastion: str | None

    @property
    def where(self) -> str:
        return f"{self.user}@{host_pattern(self.address, self.port)}"


def _path(value: str, spec_dir: str | None) -> str:
    path = Path(value).expanduser()
    if not path.is_absolute() and spec_dir is not None:
        path = Path(spec_dir) / path
    return str(path)


def resolve_target(cluster: Cluster, host: Host, spec_dir: str | None = None) -> SSHTarget:
    """The spec's ``ssh`` defaults with the host's overrides applied."""
    base, over = cluster.ssh, host.ssh

    def pick(name: str) -> Any:
        value = getattr(over, name) if over is not None else None
        return getattr(base, name) if value is None else value

    identity = pick("identity_file")
    bastion = pick("bastion")
    return SSHTarget(
        name=host.name,
        address=str(host.address),
        port=pick("port"),
        user=pick("user"),
        identity_file=_path(identity, spec_dir) if identity else None,
        use_agent=base.use_agent,
        known_hosts_file=_path(pick("known_hosts_file"), spec_dir),
        host_key_policy=pick("host_key_policy"),
        connect_timeout=float(pick("connect_timeout")),
        bastion=bastion or None,
    )


def parse_bastion(text: str, user: str) -> tuple[str, str, int]:
    """``[user@]host[:port]`` → (user, host, port)."""
    who, _, rest = text.rpartition("@")
    host, port = rest, 22
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = int(tail[1:]) if tail.startswith(":") else 22
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
        port = int(port_text)
    return who or user, host, port


class _Client(asyncssh.SSHClient):
    """Decides about keys missing from known_hosts; remembers why it refused one."""

    def __init__(self, known: KnownHosts, policy: str, address: str, port: int) -> None:
        self.known, self.policy, self.address, self.port = known, policy, address, port
        self.problem: str | None = None
        self.offered: str | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: Any) -> bool:
        self.offered = key.get_fingerprint()
        if self.known.trusted(host, addr, port):
            self.problem = "changed"
            return False
        if self.policy == "accept-new":
            if self.known.record(self.address, self.port, key):
                return True
            self.problem = "changed"
            return False
        self.problem = "unknown"
        return False


@dataclass(frozen=True)
class LostCommand:
    """A command that was running when its connection died: stopped before the next one runs."""

    shown: str
    pgid: int
    start: int


Reopen = Callable[[], Awaitable[Any]]


class SSHTransport:
    """:class:`~hactl.transport.base.Transport` over one asyncssh connection, reopened (by
    ``reopen``) when it closed."""

    def __init__(
        self,
        host: str,
        conn: Any,
        user: str,
        max_channels: int = MAX_CHANNELS,
        reopen: Reopen | None = None,
    ) -> None:
        self.host = host
        self.user = user
        self._conn = conn
        self._reopen = reopen
        self._dead: Any = None
        """The connection a session found closed (asyncssh may not have marked it closed yet)."""
        self._reconnecting = asyncio.Lock()
        self._reconnect_failed: tuple[float, HactlError] | None = None
        """When the last reconnect failed, and how: shared with the commands that waited on it."""
        self.reconnects = 0
        self.lost: list[LostCommand] = []
        """Commands that were running when a connection died, not yet known to be stopped."""
        self._sem = asyncio.Semaphore(max_channels)
        self.max_in_flight = 0
        self._in_flight = 0
        self._kills = asyncio.Semaphore(KILL_CHANNELS)
        self._stopping: set[asyncio.Task[bool]] = set()

    def _closed(self, conn: Any) -> bool:
        return conn is self._dead or connection_gone(conn)

    async def _connection(self) -> Any:
        """The open connection: a closed one is replaced first (one reconnect shared by every
        caller), and commands lost with an earlier one are stopped first."""
        if not self._closed(self._conn) and not self.lost:
            return self._conn
        asked = time.monotonic()
        async with self._reconnecting:
            if self._closed(self._conn):
                if self._reopen is None:
                    raise UnreachableError("the SSH connection is closed", host=self.host)
                failed = self._reconnect_failed
                if failed is not None and failed[0] >= asked:
                    raise failed[1]  # the attempt made while this one waited failed
                with contextlib.suppress(Exception):
                    self._conn.close()
                try:
                    self._conn = await self._reopen()  # known_hosts checked as the first time
                except HactlError as exc:
                    self._reconnect_failed = (time.monotonic(), exc)
                    raise
                self._reconnect_failed = None
                self.reconnects += 1
                _log.info("ssh.reconnected", host=self.host, reconnects=self.reconnects)
            if self.lost:
                await self._stop_lost(self._conn)
            return self._conn

    async def _stop_lost(self, conn: Any) -> None:
        """Make sure the commands lost with the old connection are no longer running."""
        for lost in list(self.lost):
            try:
                async with self._kills:
                    done = await asyncio.wait_for(
                        conn.run(self._admin(lost_script(lost.pgid, lost.start)), check=False),
                        STOP_TIMEOUT,
                    )
            except (TimeoutError, asyncssh.Error, OSError) as exc:
                self._dead = conn if connection_gone(conn) else self._dead
                raise UnreachableError(
                    f"could not check whether `{lost.shown}` (process group {lost.pgid}), "
                    f"running when the SSH connection was lost, is stopped: {exc}",
                    host=self.host,
                ) from exc
            found = str(done.stdout).strip() or "?"
            if done.exit_status != 0:
                raise CommandError(
                    f"`{lost.shown}` was running when the SSH connection was lost and is still "
                    f"there after SIGKILL (process group {lost.pgid}): {str(done.stderr).strip()}",
                    host=self.host,
                    transient=False,
                    hint="check with `ps -e -o pid,pgid,stat,args` on the host (a process stuck "
                    "in the kernel?) before running hactl again",
                )
            self.lost.remove(lost)
            _log.info(
                "ssh.lost_command_stopped",
                host=self.host,
                command=lost.shown,
                pgid=lost.pgid,
                found={"same": "killed", "members": "killed (leader gone)"}.get(found, "gone"),
            )

    async def run(
        self,
        command: Command,
        *,
        stdin: bytes | str | None = None,
        timeout: float | None = None,
        check: bool = True,
        backstop: bool = True,
    ) -> Result:
        shown = with_sudo(command, self.user)
        wire = self._admin(wrap(wire_command(command), backstop=timeout if backstop else None))
        data = stdin.encode() if isinstance(stdin, str) else stdin
        async with self._sem:
            started = time.monotonic()
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            try:
                status, out, err = await self._session(shown, wire, data, timeout)
            except CommandTimeout as exc:
                raise timeout_error(self.host, shown, timeout, exc) from None
            except OutputLimitError as exc:
                raise OutputLimitError(
                    f"`{display_command(shown)}` {exc.message}",
                    host=self.host, argv=display_argv(shown), hint=exc.hint,
                ) from None  # fmt: skip
            except asyncssh.ChannelOpenError as exc:
                raise UnreachableError(
                    f"could not open an SSH session: {exc.reason}", host=self.host
                ) from exc
            except (asyncssh.DisconnectError, asyncssh.ConnectionLost, OSError) as exc:
                raise UnreachableError(
                    f"the SSH connection was lost: {exc}", host=self.host
                ) from exc
            finally:
                self._in_flight -= 1
        result = Result(status, _text(out), _text(err))
        _log.debug(
            "ran",
            host=self.host,
            command=display_command(shown, 120),
            exit_status=status,
            seconds=round(time.monotonic() - started, 3),
        )
        return check_result(self.host, shown, result, secrets_of(command)) if check else result

    async def _session(
        self, shown: Command, wire: str, data: bytes | None, timeout: float | None
    ) -> tuple[int, bytes, bytes]:
        """One session on the open connection; when the connection turns out to be closed
        before anything was sent, once more on a new one. Never sends a command twice."""
        for fresh in (False, True):
            conn = await self._connection()
            try:
                return await run_session(
                    conn, wire, data, timeout,
                    wrap_admin=self._admin, kills=self._kills, pending=self._stopping,
                )  # fmt: skip
            except SessionNotOpened as exc:
                self._dead = conn
                if fresh or self._reopen is None:
                    raise UnreachableError(
                        f"could not open an SSH session: {exc.reason}", host=self.host
                    ) from None
                _log.info("ssh.connection_closed", host=self.host, reason=exc.reason)
            except SessionLost as exc:
                self._dead = conn
                if exc.pgid is not None and exc.start is not None:
                    self.lost.append(LostCommand(display_command(shown), exc.pgid, exc.start))
                raise lost_error(self.host, shown, exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _admin(self, script: str) -> str:
        """A script as the line to send: as is for root, under ``sudo -n sh -c`` otherwise."""
        return script if self.user == "root" else wire_command(with_sudo(script, self.user))

    async def put(self, path: str, data: bytes, mode: int = 0o644) -> None:
        await self.run(put_script(path, mode, len(data)), stdin=data)

    async def aclose(self) -> None:
        """Close the connection, after any kill of a cancelled command has finished."""
        if self._stopping:
            await asyncio.wait(set(self._stopping), timeout=STOP_TIMEOUT)
        self._conn.close()
        await self._conn.wait_closed()


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", errors="replace")


class Connections:
    """Opens (all at once) and holds one SSH connection per host; closes them all on exit.

    async with Connections(cluster, spec_dir=...) as conns:
        transports = await conns.open_all()   # {name: SSHTransport | TransportError}
    """

    def __init__(
        self,
        cluster: Cluster,
        *,
        spec_dir: str | None = None,
        max_channels: int = MAX_CHANNELS,
    ) -> None:
        self.cluster = cluster
        self.spec_dir = spec_dir
        self.max_channels = max_channels
        self.known_hosts = KnownHostsCache()
        self._options: dict[tuple[Any, ...], Any] = {}
        self._transports: dict[str, SSHTransport] = {}
        self._jumps: dict[tuple[Any, ...], asyncio.Task[Any]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def __aenter__(self) -> Connections:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _options_for(self, target: SSHTarget, user: str) -> Any:
        key = (user, target.identity_file, target.use_agent, target.connect_timeout)
        if key not in self._options:
            kwargs: dict[str, Any] = {
                "username": user,
                "connect_timeout": target.connect_timeout,
                "config": [],
                "password_auth": False,
                "kbdint_auth": False,
                "gss_auth": False,
                "keepalive_interval": 30,
            }
            if target.identity_file:
                kwargs["client_keys"] = [target.identity_file]
            if not target.use_agent:
                kwargs["agent_path"] = None
            self._options[key] = asyncssh.SSHClientConnectionOptions(**kwargs)
        return self._options[key]

    async def _open(
        self, name: str, target: SSHTarget, user: str, tunnel: Any, via: str = ""
    ) -> Any:
        known = self.known_hosts.get(target.known_hosts_file)
        client: _Client | None = None

        def factory() -> _Client:
            nonlocal client
            client = _Client(known, target.host_key_policy, target.address, target.port)
            return client

        try:
            return await asyncssh.connect(
                target.address,
                target.port,
                options=self._options_for(target, user),
                known_hosts=known.db,
                client_factory=factory,
                tunnel=tunnel if tunnel is not None else (),
            )
        except (TimeoutError, OSError, asyncssh.Error, ValueError) as exc:
            raise map_connect_error(name, target, exc, client, via) from exc

    async def _jump(self, name: str, target: SSHTarget) -> Any:
        assert target.bastion is not None
        user, address, port = parse_bastion(target.bastion, target.user)
        jump = SSHTarget(
            name=f"bastion {target.bastion}",
            address=address,
            port=port,
            user=user,
            identity_file=target.identity_file,
            use_agent=target.use_agent,
            known_hosts_file=target.known_hosts_file,
            host_key_policy=target.host_key_policy,
            connect_timeout=target.connect_timeout,
            bastion=None,
        )
        key = (user, address, port, target.identity_file, target.known_hosts_file)
        task = self._jumps.get(key)
        if (
            task is not None
            and task.done()
            and not task.cancelled()
            and (task.exception() is not None or connection_gone(task.result()))
        ):
            task = None  # a failed or closed bastion connection is opened again
        if task is None:
            task = asyncio.ensure_future(self._open(name, jump, user, None, via="bastion "))
            self._jumps[key] = task
        return await asyncio.shield(task)

    async def connect(self, host: Host) -> SSHTransport:
        """The host's transport, opening the connection on first use (concurrent callers for
        the same host share one attempt)."""
        if host.name in self._transports:
            return self._transports[host.name]
        lock = self._locks.setdefault(host.name, asyncio.Lock())
        async with lock:
            if host.name in self._transports:
                return self._transports[host.name]
            return await self._connect(host)

    async def _connect(self, host: Host) -> SSHTransport:
        target = resolve_target(self.cluster, host, self.spec_dir)

        async def reopen() -> Any:
            tunnel = await self._jump(host.name, target) if target.bastion else None
            return await self._open(host.name, target, target.user, tunnel)

        transport = SSHTransport(
            host.name, await reopen(), target.user, self.max_channels, reopen=reopen
        )
        self._transports[host.name] = transport
        return transport

    async def open_all(
        self, hosts: Sequence[Host] | None = None
    ) -> dict[str, SSHTransport | HactlError]:
        """Connect to ``hosts`` (default: every host of the spec) concurrently. A host that
        cannot be reached maps to its error instead of failing the others."""
        targets = list(self.cluster.all_hosts() if hosts is None else hosts)
        outcomes = await gather_each(
            targets, self.connect, limit=CONNECT_PARALLELISM, name=lambda h: h.name
        )
        out: dict[str, SSHTransport | HactlError] = {}
        for name, value in outcomes.items():
            if isinstance(value, HactlError | SSHTransport):
                out[name] = value
            else:
                out[name] = TransportError(f"{type(value).__name__}: {value}", host=name)
        return out

    def transport(self, name: str) -> SSHTransport:
        return self._transports[name]

    async def aclose(self) -> None:
        transports, self._transports = list(self._transports.values()), {}
        for transport in transports:
            await transport.aclose()
        jumps, self._jumps = list(self._jumps.values()), {}
        for task in jumps:
            if not task.done():
                task.cancel()
            try:
                conn = await task
            except (asyncio.CancelledError, HactlError):
                continue
            conn.close()
            await conn.wait_closed()
