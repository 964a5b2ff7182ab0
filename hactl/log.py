"""structlog set-up: console lines on a TTY, JSON lines otherwise; always on stderr.

structlog renders every line hactl writes, but it is imported only when the first line at or
above the level is written: ``import structlog`` costs about 0.1 s of CPU (its package imports
``structlog.dev``, which imports rich) and at the default level (warning) most runs write
nothing. :func:`get_logger` returns a :class:`Logger` that compares the level first, then hands
the event to a structlog logger bound to the same context. :func:`bind_contextvars` keeps
context-local values (``host=…`` per task, see :mod:`hactl.concurrency`) in a ``ContextVar`` of
this module; they are handed to structlog's ``contextvars`` for the line being written.
"""

from __future__ import annotations

import sys
from contextvars import ContextVar
from typing import Any

DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50
LEVELS = {"debug": DEBUG, "info": INFO, "warning": WARNING, "error": ERROR,
          "exception": ERROR, "critical": CRITICAL}  # fmt: skip

_level = 0
"""Lines below this are dropped before structlog (0 until configured: structlog's defaults)."""
_format: str | None = None
"""``json`` or ``console`` once :func:`configure_logging` ran."""
_structlog_ready = False
_bound: ContextVar[dict[str, Any] | None] = ContextVar("hactl_log_context", default=None)


QUIET_LIBRARIES = ("asyncssh",)
"""Standard-library loggers pinned to WARNING: asyncssh writes the wire command line (secrets
revealed) at INFO (``[conn=1, chan=2]   Command: …``); an embedding program or test harness
that logs at INFO must never record it."""


def pin_library_loggers() -> None:
    """Pin :data:`QUIET_LIBRARIES` to WARNING (called when the transport is imported and by
    :func:`configure_logging`; hactl's own lines go through structlog, not these loggers)."""
    import logging

    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)


def configure_logging(log_format: str = "auto", verbose: int = 0) -> None:
    global _level, _format, _structlog_ready
    pin_library_loggers()
    _level = WARNING - 10 * min(verbose, 2)
    _format = ("console" if sys.stderr.isatty() else "json") if log_format == "auto" else log_format
    _structlog_ready = False
    if "structlog" in sys.modules:
        _structlog()


def _structlog() -> Any:
    """structlog, imported and configured as :func:`configure_logging` asked."""
    global _structlog_ready
    import structlog

    if _format is not None and not _structlog_ready:
        renderer: structlog.typing.Processor
        if _format == "json":
            renderer = structlog.processors.JSONRenderer()
        else:
            renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                renderer,
            ],
            wrapper_class=structlog.make_filtering_bound_logger(_level),
            logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
            cache_logger_on_first_use=False,
        )
        _structlog_ready = True
    return structlog


def bind_contextvars(**values: Any) -> None:
    """Bind values for every line written from this context (task) on."""
    _bound.set({**(_bound.get() or {}), **values})


class Logger:
    """``debug/info/warning/error/exception/critical(event, **kw)`` and ``bind(**kw)``, like
    structlog's filtering bound logger, which writes the lines that pass the level."""

    __slots__ = ("_context",)

    def __init__(self, context: dict[str, Any]) -> None:
        self._context = context

    def bind(self, **values: Any) -> Logger:
        return Logger({**self._context, **values})

    def _emit(self, method: str, event: str, values: dict[str, Any]) -> None:
        if LEVELS[method] < _level:
            return
        structlog = _structlog()
        logger = structlog.get_logger(**self._context)
        with structlog.contextvars.bound_contextvars(**(_bound.get() or {})):
            getattr(logger, method)(event, **values)

    def debug(self, event: str, **values: Any) -> None:
        self._emit("debug", event, values)

    def info(self, event: str, **values: Any) -> None:
        self._emit("info", event, values)

    def warning(self, event: str, **values: Any) -> None:
        self._emit("warning", event, values)

    def error(self, event: str, **values: Any) -> None:
        self._emit("error", event, values)

    def exception(self, event: str, **values: Any) -> None:
        self._emit("exception", event, values)

    def critical(self, event: str, **values: Any) -> None:
        self._emit("critical", event, values)


def get_logger(**context: object) -> Logger:
    return Logger(dict(context))


def bound() -> dict[str, Any]:
    """The values :func:`bind_contextvars` bound in this context."""
    return dict(_bound.get() or {})
