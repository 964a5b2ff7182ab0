"""The one seam between hactl and a host: the :class:`Transport` protocol.

A command is either an argv tuple (``("etcdctl", "member", "list")``; items may be
:class:`~hactl.sensitive.Sensitive`) or a ``str`` holding a POSIX ``sh`` script. Only a transport
turns an argv into a command line (:func:`wire_command`, ``shlex.join``) and only there are
sensitive values revealed; everything that is shown or logged uses :func:`display_command`,
where they read ``(sensitive value)``.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from hactl.errors import CommandError
from hactl.sensitive import Sensitive, mask_text

Arg = str | Sensitive
Argv = tuple[Arg, ...]
Command = Argv | str
"""An argv tuple, or a ``str`` that is a POSIX sh script."""


@dataclass(frozen=True)
class Result:
    exit_status: int
    """The command's exit status; -1 when it was killed by a signal."""
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


@runtime_checkable
class Transport(Protocol):
    """Runs commands on one host. Implementations: ``ssh.SSHTransport``, ``fake.FakeTransport``."""

    host: str
    """The host's name in the spec (used in errors and logs)."""

    async def run(
        self,
        command: Command,
        *,
        stdin: bytes | str | None = None,
        timeout: float | None = None,
        check: bool = True,
        backstop: bool = True,
    ) -> Result:
        """Run ``command``; with ``check`` a non-zero exit raises :class:`CommandError`.

        A command that overruns ``timeout``, or whose caller is cancelled, is killed on the
        host (its whole process group) before this returns or raises; the timeout's
        CommandError is transient only when the kill was confirmed. ``backstop``: the host
        also bounds the command by itself (``timeout``), for when hactl dies; read-only
        commands (the probe) may go without it."""
        ...

    async def put(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write ``data`` to ``path`` atomically (temp file in the same folder, then rename)."""
        ...

    async def aclose(self) -> None: ...


def secrets_of(command: Command) -> tuple[Sensitive, ...]:
    if isinstance(command, str):
        return ()
    return tuple(arg for arg in command if isinstance(arg, Sensitive))


def wire_command(command: Command) -> str:
    """The command line sent to the host: secrets revealed. Never log this."""
    if isinstance(command, str):
        return command
    return shlex.join(arg.reveal() if isinstance(arg, Sensitive) else arg for arg in command)


def display_command(command: Command, limit: int = 200) -> str:
    """The command line as shown in errors and logs: secrets masked, long scripts shortened."""
    if isinstance(command, str):
        first = command.strip().splitlines()[0] if command.strip() else ""
        text = f"sh script ({len(command)} bytes): {first}"
    else:
        text = shlex.join(str(arg) for arg in command)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def display_argv(command: Command) -> tuple[str, ...]:
    if isinstance(command, str):
        return ("sh", "-c", display_command(command))
    return tuple(str(arg) for arg in command)


def with_sudo(command: Command, user: str) -> Command:
    """Prefix ``sudo -n`` when the login user is not root (scripts run under ``sh -c``)."""
    if user == "root":
        return command
    if isinstance(command, str):
        return ("sudo", "-n", "sh", "-c", command)
    return ("sudo", "-n", "--", *command)


def check_result(
    host: str,
    command: Command,
    result: Result,
    secrets: Sequence[Sensitive] = (),
) -> Result:
    """Raise :class:`CommandError` for a non-zero exit; secrets are masked in the message."""
    if result.ok:
        return result
    stderr = mask_text(result.stderr, list(secrets)).strip()
    last = stderr.splitlines()[-1] if stderr else "(no output on stderr)"
    raise CommandError(
        f"`{display_command(command)}` exited with status {result.exit_status}: {last}",
        host=host,
        argv=display_argv(command),
        exit_status=result.exit_status,
        stderr=stderr,
    )


def put_script(path: str, mode: int, size: int | None = None) -> str:
    """sh that writes stdin to ``path`` atomically with ``mode`` (used by real transports).

    The temporary file is this shell's own (``.hactl-tmp.<pid>``: two writers of one path never
    share it) and is removed whatever happens. With ``size``, a file that did not arrive whole
    (hactl killed, the connection lost mid-transfer: ``cat`` sees an early end of input) is
    never moved in place: a cut certificate or env file must not look installed."""
    folder = path.rsplit("/", 1)[0] or "/"
    check = (
        f'n=$(wc -c < "$t"); if [ $((n)) -ne {size} ]; then '
        f"printf '%s: %s of {size} bytes arrived; not installed\\n' {shlex.quote(path)} $((n)) >&2; "
        "exit 1; fi; "
        if size is not None else ""
    )
    return (
        f"set -e; umask 077; mkdir -p {shlex.quote(folder)}; "
        f"t={shlex.quote(path + '.hactl-tmp')}.$$; trap 'rm -f \"$t\"' EXIT; "
        f'cat > "$t"; {check}chmod {mode:o} "$t"; '
        f'mv -f "$t" {shlex.quote(path)}'
    )
