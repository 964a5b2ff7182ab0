"""The error hierarchy. Every error hactl raises on purpose is a :class:`HactlError`.

    HactlError                 base: message, optional host and step, a hint (what to do next)
    ├── SpecError              the spec is invalid (carries one or more located issues)
    ├── TransportError         talking to a host failed
    │   ├── UnreachableError   transient: connection refused / timed out / reset
    │   ├── AuthError          permanent: the host refused our credentials
    │   └── HostKeyError       permanent: unknown or changed host key
    │       └── HostKeyChangedError  a key other than the recorded one: plans and applies refuse
    ├── CommandError           a command on a host exited non-zero
    ├── PlanError              planning refused (a safety rule would be broken)
    ├── StalePlanError         a saved plan no longer matches the hosts
    ├── LockError              another apply holds the cluster lock
    └── ApplyError             one or more steps failed (lists host: message lines)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class HactlError(Exception):
    """Base class. ``transient`` errors may be retried; the others may not."""

    transient: bool = False

    def __init__(
        self,
        message: str,
        *,
        host: str | None = None,
        step: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.host = host
        self.step = step
        self.hint = hint

    def __str__(self) -> str:
        where = ""
        if self.host:
            where += f"{self.host}: "
        if self.step:
            where += f"[{self.step}] "
        text = f"{where}{self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class SpecError(HactlError):
    """The spec cannot be used; ``issues`` holds every located problem."""

    def __init__(self, message: str, issues: Sequence[object] | None = None) -> None:
        super().__init__(message)
        self.issues: list[Any] = list(issues or [])


class TransportError(HactlError):
    """Talking to a host failed."""


class UnreachableError(TransportError):
    transient = True


class AuthError(TransportError):
    pass


class HostKeyError(TransportError):
    pass


class HostKeyChangedError(HostKeyError):
    """The host (or its bastion) offered another key than known_hosts records for it: refused
    under every policy, and not "unreachable": a plan, an apply or a check that meets it is
    refused (:func:`hactl.facts.host_keys.host_key_problems`), whether or not a step needs the host."""

    def __init__(
        self,
        message: str,
        *,
        host: str | None = None,
        hint: str | None = None,
        address: str = "",
        offered: str | None = None,
        known_hosts_file: str = "",
    ) -> None:
        super().__init__(message, host=host, hint=hint)
        self.address = address
        """The refused key's host as known_hosts writes it (``ADDR`` or ``[ADDR]:PORT``)."""
        self.offered = offered
        """The offered key's fingerprint (``SHA256:…``), when the server sent one."""
        self.known_hosts_file = known_hosts_file


class CommandError(HactlError):
    """A command exited non-zero on a host."""

    def __init__(
        self,
        message: str,
        *,
        host: str | None = None,
        step: str | None = None,
        hint: str | None = None,
        argv: tuple[str, ...] = (),
        exit_status: int | None = None,
        stderr: str = "",
        transient: bool = False,
    ) -> None:
        super().__init__(message, host=host, step=step, hint=hint)
        self.argv = argv
        self.exit_status = exit_status
        self.stderr = stderr
        self.transient = transient


class PlanError(HactlError):
    """Planning refused: a safety rule would be broken."""


class StalePlanError(HactlError):
    """A saved plan's observations no longer match the hosts."""


class LockError(HactlError):
    """Another apply holds the cluster lock."""


class ApplyError(HactlError):
    """One or more steps failed."""
