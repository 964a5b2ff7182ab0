"""What a fact is: a small class that knows the shell that reads it and a pure parser.

A :class:`Fact` is one *section* of the probe's batched script (see :mod:`hactl.probe`): its
:meth:`~Fact.script` is a POSIX ``sh`` snippet (argv parts joined by the transport's
:func:`~hactl.transport.base.wire_command`), run as a shell function, and its :meth:`~Fact.parse`
turns that snippet's stdout into a value. Snippets only read: no file, directory, cache or
service state is ever changed on a host.

Exit statuses of a section: 0 (or one of ``ok_statuses``) → parse stdout; :data:`SKIPPED`
(``return 100``) → not applicable here (the reason is on stderr), the value is None; anything
else → the section failed and its stderr becomes the error text.

A parser raises :class:`FactParseError` and nothing else on output it cannot read: every
subclass's ``parse`` is wrapped (:meth:`Fact.__init_subclass__`) so that the errors of reading
an unexpected shape (``null`` or a list where an object was expected, a missing key, JSON
nested past the recursion limit, a number that is not one) become a FactParseError naming the
section. The probe reports those as "bad output from host X", never as an unreachable host
(tests/unit/test_fuzz_facts.py feeds every parser random and truncated output).
"""

from __future__ import annotations

import contextlib
import functools
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar, Generic, TypeVar

from hactl.transport.base import Argv, wire_command

T = TypeVar("T")

SKIPPED = 100
"""Section exit status: "does not apply on this host" (e.g. etcd is not running)."""


class FactParseError(ValueError):
    """A section's output could not be understood."""


SHAPE_ERRORS: tuple[type[BaseException], ...] = (
    LookupError,  # KeyError, IndexError
    TypeError,
    ValueError,  # also UnicodeError, json.JSONDecodeError
    AttributeError,
    ArithmeticError,  # OverflowError
    RecursionError,
)
"""What reading output of an unexpected shape raises in a parser (→ FactParseError)."""


@contextlib.contextmanager
def _shapes_read_as(section: str) -> Iterator[None]:
    """Errors of reading output of an unexpected shape → :class:`FactParseError` naming ``section``."""
    try:
        yield
    except FactParseError:
        raise
    except SHAPE_ERRORS as exc:
        detail = f"{type(exc).__name__}: {exc}"
        raise FactParseError(f"{section}: output of an unexpected shape ({detail[:200]})") from exc


def _guard(section: str, parse: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(parse)
    def guarded(self: Any, stdout: str) -> Any:
        with _shapes_read_as(section):
            return parse(self, stdout)

    guarded.__hactl_guarded__ = True  # type: ignore[attr-defined]
    return guarded


def guarded_parser(section: str) -> Callable[[Callable[[str], T]], Callable[[str], T]]:
    """The same guard for a module-level parser that steps call on their fresh reads (e.g.
    :func:`hactl.facts.etcd.parse_member_list`): output of an unexpected shape raises
    :class:`FactParseError` naming ``section``, never a KeyError or TypeError."""

    def wrap(parse: Callable[[str], T]) -> Callable[[str], T]:
        @functools.wraps(parse)
        def guarded(stdout: str) -> T:
            with _shapes_read_as(section):
                return parse(stdout)

        return guarded

    return wrap


class Fact(ABC, Generic[T]):
    """One probe section. Subclasses are frozen dataclasses holding their parameters."""

    section: ClassVar[str]
    """Unique name of the section in the batched script (``etcd.members``)."""
    ok_statuses: ClassVar[frozenset[int]] = frozenset({0})
    """Exit statuses whose stdout is parsed (``endpoint health`` exits 1 when unhealthy)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        parse = cls.__dict__.get("parse")
        if parse is not None and not getattr(parse, "__hactl_guarded__", False):
            cls.parse = _guard(getattr(cls, "section", cls.__name__), parse)  # type: ignore[method-assign]

    @abstractmethod
    def script(self) -> str:
        """The sh snippet (a function body: may ``return``, must not ``exit``)."""

    @abstractmethod
    def parse(self, stdout: str) -> T:
        """Pure: the snippet's stdout → the fact's value; FactParseError when unreadable."""


def sh(argv: Argv) -> str:
    """An argv tuple as a command line inside a snippet (the transport's own joiner)."""
    return wire_command(argv)


def key_values(text: str, sep: str = "=") -> dict[str, str]:
    """``key=value`` lines → dict (first ``sep`` splits; later duplicates win; blanks skipped)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, found, value = line.partition(sep)
        if found and key.strip():
            out[key.strip()] = value.strip()
    return out


def multi_values(text: str, keys: Iterable[str], sep: str = "=") -> dict[str, list[str]]:
    """Like :func:`key_values` but collects repeated keys into lists (``manifest=…`` lines)."""
    out: dict[str, list[str]] = {key: [] for key in keys}
    for line in text.splitlines():
        key, found, value = line.partition(sep)
        if found and key in out:
            out[key].append(value)
    return out


_VERSION = re.compile(r"v?(\d+\.\d+\.\d+)")


def find_version(text: str) -> str | None:
    """First ``X.Y.Z`` in ``text`` without a leading v (``HAProxy version 2.6.12-1+deb12u4`` → ``2.6.12``)."""
    match = _VERSION.search(text)
    return match.group(1) if match else None


def fingerprint_hex(text: str) -> str | None:
    """``sha256 Fingerprint=AB:CD…`` or ``abcd…`` → ``AB:CD:…`` (None when no 64 hex digits)."""
    digits = re.sub(r"[^0-9A-Fa-f]", "", text.rpartition("=")[2])
    if len(digits) != 64:
        return None
    digits = digits.upper()
    return ":".join(digits[i : i + 2] for i in range(0, 64, 2))


def sha256_of(text: str | None) -> str | None:
    """``sha256sum < FILE`` prints ``<hex>  -``: the hex digest, or None when empty."""
    digest = (text or "").split()
    return digest[0].lower() if digest else None


def is_active(state: str | None) -> bool:
    return state == "active"


def is_enabled(state: str | None) -> bool:
    return state in {"enabled", "enabled-runtime", "static", "alias"}
