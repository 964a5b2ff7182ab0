"""Logging: structlog events, console lines on a TTY, JSON lines otherwise; always on stderr.

Every command configures logging but few write a line (the default level is warning), and
``import structlog`` costs ~0.1 s of CPU: its package imports ``structlog.dev`` and rich. So this
module imports structlog only when it needs it:

- :func:`get_logger` returns a :class:`Logger` that drops events below the level before anything
  else, exactly where structlog's filtering logger would;
- a JSON line is rendered here, the same bytes as the structlog pipeline that
  :func:`configure_logging` sets up (``merge_contextvars``, ``add_log_level``,
  ``TimeStamper(fmt="iso", utc=True)``, ``JSONRenderer`` to stderr);
- console lines (a TTY, or ``--log-format console``) and an unconfigured process (structlog's
  defaults) go through structlog itself, imported and configured on the first line written;
- :func:`bind_contextvars` binds context-local values the way ``structlog.contextvars`` does (one
  ``ContextVar`` named ``structlog_<key>`` per key), so structlog's ``merge_contextvars`` and
  ``get_contextvars`` see them.

Code that logs uses :func:`get_logger` (not ``structlog.get_logger``); structlog is configured
as soon as it is imported through here, or at once when it was already imported.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from contextvars import ContextVar, Token, copy_context
from typing import Any, TextIO

DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50
_LEVEL_TO_NAME = {DEBUG: "debug", INFO: "info", WARNING: "warning", ERROR: "error", CRITICAL: "critical"}
_PREFIX = "structlog_"  # structlog.contextvars.STRUCTLOG_KEY_PREFIX


class _Settings:
    __slots__ = ("colors", "file", "format", "level")

    def __init__(self, format: str, level: int, file: TextIO, colors: bool) -> None:
        self.format = format  # "json" or "console"
        self.level = level
        self.file = file
        self.colors = colors


_settings: _Settings | None = None
"""None until :func:`configure_logging`: then every event goes to structlog's defaults."""
_structlog_configured = False
_write_lock = threading.Lock()
_context_vars: dict[str, ContextVar[Any]] = {}


def configure_logging(log_format: str = "auto", verbose: int = 0) -> None:
    global _settings, _structlog_configured
    level = WARNING - 10 * min(verbose, 2)
    if log_format == "auto":
        log_format = "console" if sys.stderr.isatty() else "json"
    _settings = _Settings(log_format, level, sys.stderr, sys.stderr.isatty())
    _structlog_configured = False
    if "structlog" in sys.modules:
        _configure_structlog(_settings)


def _configure_structlog(settings: _Settings) -> None:
    global _structlog_configured
    import structlog

    renderer: structlog.typing.Processor
    if settings.format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=settings.colors)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(settings.level),
        logger_factory=structlog.PrintLoggerFactory(file=settings.file),
        cache_logger_on_first_use=False,
    )
    _structlog_configured = True
    registry = getattr(sys.modules["structlog.contextvars"], "_CONTEXT_VARS", None)
    if isinstance(registry, dict):  # let structlog's bind_contextvars reuse our variables
        for name, var in _context_vars.items():
            registry.setdefault(name, var)


def _structlog_logger(context: dict[str, Any]) -> Any:
    import structlog

    if _settings is not None and not _structlog_configured:
        _configure_structlog(_settings)
    return structlog.get_logger(**context)


def _interpolate(event: str, args: tuple[Any, ...]) -> str:
    """structlog's ``_maybe_interpolate``: ``%`` formatting of positional arguments."""
    if not args:
        return event
    if len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
        return event % args[0]
    return event % args


def _json_default(obj: Any) -> Any:
    """structlog's ``_json_fallback_handler``: ``__structlog__()``, else ``repr()``."""
    threadlocal = sys.modules.get("structlog.threadlocal")
    wrapper = getattr(threadlocal, "_ThreadLocalDictWrapper", None)
    if wrapper is not None and isinstance(obj, wrapper):
        return obj._dict
    try:
        return obj.__structlog__()
    except AttributeError:
        return repr(obj)


def _write_json(settings: _Settings, context: dict[str, Any], name: str, event: str, kw: dict[str, Any]) -> None:
    import json
    from datetime import UTC, datetime

    event_dict = context.copy()
    event_dict.update(**kw)
    event_dict["event"] = event
    ctx = copy_context()
    for var in ctx:  # merge_contextvars
        if var.name.startswith(_PREFIX) and ctx[var] is not Ellipsis:
            event_dict.setdefault(var.name[len(_PREFIX) :], ctx[var])
    event_dict["level"] = name
    event_dict["timestamp"] = datetime.now(tz=UTC).isoformat().replace("+00:00", "Z")
    line = json.dumps(event_dict, default=_json_default)
    with _write_lock:
        print(line, file=settings.file if settings.file is not sys.stdout else None, flush=True)


class Logger:
    """A bound logger with the methods of structlog's ``FilteringBoundLogger`` that hactl uses.

    Events below the configured level cost one comparison; the others are written as JSON here
    or handed to structlog (see the module docstring)."""

    __slots__ = ("_context",)

    def __init__(self, context: dict[str, Any]) -> None:
        self._context = context

    def __repr__(self) -> str:
        return f"<Logger(context={self._context!r})>"

    def bind(self, **new_values: Any) -> Logger:
        return Logger({**self._context, **new_values})

    def new(self, **new_values: Any) -> Logger:
        return Logger(dict(new_values))

    def unbind(self, *keys: str) -> Logger:
        context = dict(self._context)
        for key in keys:
            del context[key]
        return Logger(context)

    def try_unbind(self, *keys: str) -> Logger:
        context = dict(self._context)
        for key in keys:
            context.pop(key, None)
        return Logger(context)

    def _emit(self, level: int, method: str, event: str, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
        settings = _settings
        if settings is None:  # not configured: structlog's defaults
            return getattr(_structlog_logger(self._context), method)(event, *args, **kw)
        if level < settings.level:
            return None
        if settings.format != "json":
            return getattr(_structlog_logger(self._context), method)(event, *args, **kw)
        if method == "exception":
            kw.setdefault("exc_info", True)
        _write_json(settings, self._context, _LEVEL_TO_NAME[level], _interpolate(event, args), kw)
        return None

    def debug(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._emit(DEBUG, "debug", event, args, kw)

    def info(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._emit(INFO, "info", event, args, kw)

    msg = info

    def warning(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._emit(WARNING, "warning", event, args, kw)

    warn = warning

    def error(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._emit(ERROR, "error", event, args, kw)

    def exception(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._emit(ERROR, "exception", event, args, kw)

    def critical(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._emit(CRITICAL, "critical", event, args, kw)

    fatal = critical

    def log(self, level: int, event: str, *args: Any, **kw: Any) -> Any:
        settings = _settings
        if settings is None or (level >= settings.level and settings.format != "json"):
            return _structlog_logger(self._context).log(level, event, *args, **kw)
        if level < settings.level:
            return None
        _write_json(settings, self._context, _LEVEL_TO_NAME[level], _interpolate(event, args), kw)
        return None


def get_logger(**context: object) -> Logger:
    return Logger(dict(context))


def _var(key: str) -> ContextVar[Any]:
    name = f"{_PREFIX}{key}"
    module = sys.modules.get("structlog.contextvars")
    registry = getattr(module, "_CONTEXT_VARS", None) if module is not None else None
    var = _context_vars.get(name)
    if var is None and isinstance(registry, dict):
        var = registry.get(name)
    if var is None:
        var = ContextVar(name, default=Ellipsis)
    _context_vars[name] = var
    if isinstance(registry, dict):
        registry.setdefault(name, var)
    return var


def bind_contextvars(**kw: Any) -> Mapping[str, Token[Any]]:
    """``structlog.contextvars.bind_contextvars`` without importing structlog."""
    return {key: _var(key).set(value) for key, value in kw.items()}
