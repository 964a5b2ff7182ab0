"""The one concurrency helper: run a coroutine per item, at most ``limit`` at a time.

Like k0sctl's ``ParallelEach``: an :class:`asyncio.TaskGroup` plus a semaphore. Every task gets
the item's name bound in the logging context (``host=…``, through :func:`hactl.log.bind_contextvars`,
which structlog's ``contextvars`` see), so each log line names its host.
A failing item never cancels the others; failures are collected and raised together at the
end (one error that lists ``host: message`` lines), or returned when ``return_errors``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from hactl.errors import HactlError
from hactl.log import bind_contextvars

T = TypeVar("T")
R = TypeVar("R")


class ManyErrors(HactlError):
    """Several items failed; ``errors`` maps each item's name to its exception."""

    def __init__(self, errors: dict[str, BaseException]) -> None:
        lines = [f"{name}: {_one_line(exc)}" for name, exc in sorted(errors.items())]
        super().__init__(f"{len(errors)} hosts failed:\n  " + "\n  ".join(lines))
        self.errors = errors
        self.transient = all(getattr(exc, "transient", False) for exc in errors.values())


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, HactlError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


async def gather_each(
    items: Iterable[T],
    fn: Callable[[T], Awaitable[R]],
    *,
    limit: int,
    name: Callable[[T], str] = str,
    context_key: str = "host",
) -> dict[str, R | Exception]:
    """``{name(item): result or the exception it raised}`` in input order. Never raises for an
    item's failure (cancellation still propagates)."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    sem = asyncio.Semaphore(limit)
    order = list(items)
    results: dict[str, R | Exception] = {}

    async def one(item: T) -> None:
        key = name(item)
        bind_contextvars(**{context_key: key})
        async with sem:
            try:
                results[key] = await fn(item)
            except Exception as exc:  # collected, reported by the caller
                results[key] = exc

    async with asyncio.TaskGroup() as group:
        for item in order:
            group.create_task(one(item))
    return {name(item): results[name(item)] for item in order}


async def parallel_each(
    items: Iterable[T],
    fn: Callable[[T], Awaitable[R]],
    *,
    limit: int,
    name: Callable[[T], str] = str,
    context_key: str = "host",
) -> dict[str, R]:
    """Like :func:`gather_each`, but raise when any item failed: the error itself when one
    did, :class:`ManyErrors` when several did (every item still ran to completion)."""
    outcomes = await gather_each(items, fn, limit=limit, name=name, context_key=context_key)
    errors = {key: out for key, out in outcomes.items() if isinstance(out, Exception)}
    if len(errors) == 1:
        raise next(iter(errors.values()))
    if errors:
        raise ManyErrors(dict(errors))
    return {key: out for key, out in outcomes.items() if not isinstance(out, Exception)}
