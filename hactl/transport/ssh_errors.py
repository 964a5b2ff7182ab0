"""asyncssh and OS errors while connecting, and commands that overran their timeout → hactl
errors that name the host and the way out."""

from __future__ import annotations

import asyncio
import errno
from typing import TYPE_CHECKING

import asyncssh

from hactl.errors import (
    AuthError,
    CommandError,
    HostKeyChangedError,
    HostKeyError,
    TransportError,
    UnreachableError,
)
from hactl.transport.base import Command, display_argv, display_command
from hactl.transport.known_hosts import host_pattern

if TYPE_CHECKING:
    from hactl.transport.ssh import SSHTarget, _Client
    from hactl.transport.ssh_session import CommandTimeout, SessionLost


def host_key_error(name: str, target: SSHTarget, client: _Client | None, via: str) -> HostKeyError:
    where = host_pattern(target.address, target.port)
    offered = f" (offered {client.offered})" if client and client.offered else ""
    if client is not None and client.problem == "changed":
        shown = client.offered or "the new key's fingerprint"
        return HostKeyChangedError(
            f"the SSH host key of {via}{where} CHANGED{offered}: possible man-in-the-middle "
            f"attack, refusing to connect",
            host=name,
            hint=f"verify the new key out of band (on the host's console `ssh-keygen -lf "
            f"/etc/ssh/ssh_host_ed25519_key.pub`, or the .pub of the offered key's type, must "
            f"print {shown}); only if it matches, remove the old line with "
            f"`ssh-keygen -R '{where}' -f {target.known_hosts_file}` (ssh.knownHostsFile) and "
            f"run hactl again",
            address=where,
            offered=client.offered,
            known_hosts_file=target.known_hosts_file,
        )
    return HostKeyError(
        f"the SSH host key of {via}{where} is not in {target.known_hosts_file}{offered}",
        host=name,
        hint=f"verify it and add it with `ssh-keyscan -H -p {target.port} {target.address} >> "
        f"{target.known_hosts_file}`, or set `hostKeyPolicy: accept-new` in the spec's ssh section",
    )


def map_connect_error(
    name: str, target: SSHTarget, exc: BaseException, client: _Client | None, via: str = ""
) -> TransportError:
    """asyncssh/OS errors while connecting → hactl errors with a next step."""
    where = f"{via}{target.where}"
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return host_key_error(name, target, client, via)
    if isinstance(exc, asyncssh.PermissionDenied):
        key = target.identity_file or "the ssh-agent's and default keys"
        return AuthError(
            f"{where} refused our credentials ({key})",
            host=name,
            hint=f"check that the public key of {key} is in ~{target.user}/.ssh/authorized_keys "
            "on the host, and the spec's ssh.user / identityFile",
        )
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return UnreachableError(
            f"no SSH answer from {where} within {target.connect_timeout:g}s",
            host=name,
            hint="check that the host is up and reachable, or raise ssh.connectTimeout",
        )
    if isinstance(exc, ConnectionRefusedError):
        return UnreachableError(
            f"connection refused by {where}",
            host=name,
            hint=f"is sshd running and listening on port {target.port}?",
        )
    if isinstance(exc, OSError) and exc.errno in {errno.EHOSTUNREACH, errno.ENETUNREACH}:
        return UnreachableError(
            f"{where} is unreachable: {exc.strerror}",
            host=name,
            hint="check the address in the spec and the network path (or the bastion)",
        )
    if isinstance(exc, (OSError, asyncssh.DisconnectError, asyncssh.ConnectionLost)):
        return UnreachableError(f"connecting to {where} failed: {exc}", host=name)
    if isinstance(exc, asyncssh.KeyImportError | asyncssh.KeyEncryptionError):
        return AuthError(
            f"cannot load the identity file {target.identity_file}: {exc}",
            host=name,
            hint="use an unencrypted key file or load it into the ssh-agent",
        )
    return TransportError(f"connecting to {where} failed: {type(exc).__name__}: {exc}", host=name)


def timeout_error(
    host: str, command: Command, timeout: float | None, exc: CommandTimeout
) -> CommandError:
    """A command that overran its timeout was killed on the host (its whole process group).
    Transient only once the group is known to be gone: a retry never runs alongside it."""
    shown = display_command(command)
    if exc.stopped:
        return CommandError(
            f"`{shown}` did not finish within {timeout:g}s: killed after {timeout:g}s "
            f"(process group {exc.pgid} on the host, confirmed gone)",
            host=host,
            argv=display_argv(command),
            transient=True,
            hint="the host may be overloaded; a retry may succeed",
        )
    return CommandError(
        f"`{shown}` did not finish within {timeout:g}s and hactl could not confirm that it was "
        f"stopped (process group {exc.pgid if exc.pgid is not None else 'unknown'})",
        host=host,
        argv=display_argv(command),
        transient=False,
        hint="the command may still be running on the host: check with `ps -e -o pid,pgid,args` "
        "and wait for it (or kill it) before running hactl again",
    )


def lost_error(host: str, command: Command, exc: SessionLost) -> TransportError:
    """The connection died while ``command`` ran. Never sent again by the transport: transient
    when its process group is known (the next command on the host stops what is left of it
    first, over a new connection), permanent when it is not (it may be running, unseen)."""
    shown = display_command(command)
    if exc.pgid is not None and exc.start is not None:
        return UnreachableError(
            f"the SSH connection was lost while `{shown}` ran ({exc.reason}); the next command "
            f"on this host reconnects and first stops what is left of it (process group "
            f"{exc.pgid})",
            host=host,
            hint="the host may have rebooted or the network dropped; a retry reconnects",
        )
    return TransportError(
        f"the SSH connection was lost while `{shown}` was starting ({exc.reason}): hactl cannot "
        "tell whether it runs on the host",
        host=host,
        hint="check with `ps -e -o pid,pgid,args` on the host and wait for it (or kill it) "
        "before running hactl again",
    )
