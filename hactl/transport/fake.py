"""FakeTransport: scripted answers for unit tests (like httpx's ``MockTransport``).

    fake = FakeTransport("etcd01")
    fake.on(("etcdctl", "member", "list"), stdout=MEMBERS_JSON)        # argv prefix
    fake.on(re.compile(r"^systemctl is-active"), stdout="active\\n")   # regex on the display line
    fake.on(lambda wire: "BEGIN" in wire, respond=my_function)          # any predicate
    await fake.run(("etcdctl", "member", "list", "-w", "json"))
    assert fake.calls[0].argv == ("etcdctl", "member", "list", "-w", "json")

Rules are tried newest first. A command no rule matches returns exit 127 (``default``), or
raises when ``strict=True``. ``fail_with`` makes every call raise (e.g. an UnreachableError).
Calls are recorded with secrets masked, exactly as a log would show them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from hactl.errors import HactlError
from hactl.transport.base import (
    Command,
    Result,
    check_result,
    display_argv,
    display_command,
    secrets_of,
    wire_command,
)

Matcher = tuple[str, ...] | re.Pattern[str] | Callable[[str], bool]
Responder = Callable[["Call"], Result]


@dataclass(frozen=True)
class Call:
    argv: tuple[str, ...]
    """Display argv (secrets masked); for a script: ``("sh", "-c", <summary>)``."""
    wire: str
    """What a real transport would send (secrets revealed: tests may assert on it)."""
    stdin: bytes | None
    timeout: float | None
    is_script: bool


@dataclass
class _Rule:
    matcher: Matcher
    respond: Responder


@dataclass
class FakeTransport:
    host: str = "fake"
    strict: bool = False
    default: Result = field(default_factory=lambda: Result(127, "", "fake: command not scripted"))
    fail_with: HactlError | None = None
    calls: list[Call] = field(default_factory=list)
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    closed: bool = False
    _rules: list[_Rule] = field(default_factory=list)

    def on(
        self,
        matcher: Matcher,
        *,
        stdout: str = "",
        stderr: str = "",
        exit_status: int = 0,
        respond: Responder | None = None,
    ) -> FakeTransport:
        fixed = Result(exit_status, stdout, stderr)
        self._rules.append(_Rule(matcher, respond or (lambda _call: fixed)))
        return self

    def _matches(self, matcher: Matcher, call: Call) -> bool:
        if isinstance(matcher, tuple):
            return not call.is_script and call.argv[: len(matcher)] == matcher
        if isinstance(matcher, re.Pattern):
            return bool(matcher.search(call.wire))
        return matcher(call.wire)

    async def run(
        self,
        command: Command,
        *,
        stdin: bytes | str | None = None,
        timeout: float | None = None,
        check: bool = True,
        backstop: bool = True,
    ) -> Result:
        if self.closed:
            raise RuntimeError(f"{self.host}: transport is closed")
        if self.fail_with is not None:
            raise self.fail_with
        data = stdin.encode() if isinstance(stdin, str) else stdin
        call = Call(
            display_argv(command), wire_command(command), data, timeout, isinstance(command, str)
        )
        self.calls.append(call)
        for rule in reversed(self._rules):
            if self._matches(rule.matcher, call):
                result = rule.respond(call)
                break
        else:
            if self.strict:
                raise AssertionError(f"{self.host}: unexpected command {display_command(command)}")
            result = self.default
        return check_result(self.host, command, result, secrets_of(command)) if check else result

    async def put(self, path: str, data: bytes, mode: int = 0o644) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.files[path] = (data, mode)

    async def aclose(self) -> None:
        self.closed = True
