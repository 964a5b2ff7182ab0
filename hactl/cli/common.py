"""Shared CLI pieces: the -f/--file option, loading a spec, mapping errors to exit codes."""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any, TypeVar

import click

from hactl.errors import HactlError, SpecError

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

spec_option = click.option(
    "-f",
    "--file",
    "spec_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="The cluster spec (YAML).",
)


def print_spec_error(exc: SpecError) -> None:
    for issue in exc.issues:
        click.secho(str(issue), fg="red", err=True)
    if not exc.issues:
        click.secho(str(exc), fg="red", err=True)


def handle_errors(func: F) -> F:
    """Turn HactlError into a clear message on stderr and exit code 1."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SpecError as exc:
            print_spec_error(exc)
            sys.exit(1)
        except HactlError as exc:
            click.secho(f"Error: {exc}", fg="red", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def load_spec(path: str) -> Any:
    """Load and validate a spec; print its warnings on stderr; return the Cluster."""
    from hactl.spec.load import load_file

    loaded = load_file(path)
    for warning in loaded.warnings:
        click.secho(str(warning), fg="yellow", err=True)
    return loaded.cluster


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)``; asyncio is imported here, by the commands that need it."""
    import asyncio

    return asyncio.run(coro)
