"""hactl.log writes JSON lines itself (no structlog import on the hot path): the same bytes as the
structlog pipeline it replaces, level filtering included; console lines still go through structlog."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from hactl import log
from hactl.concurrency import gather_each

REPO = Path(__file__).resolve().parents[2]
STAMP = re.compile(r'"timestamp": "(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z)"')


@pytest.fixture
def stderr(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """Log lines land in capsys (configure_logging takes sys.stderr as it is then)."""
    saved = log._settings
    try:
        yield capsys
    finally:
        log._settings = saved
        structlog.reset_defaults()


class Custom:
    def __structlog__(self) -> str:
        return "custom!"


class Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


def _events(logger: Any) -> None:
    """The same calls through either logger (both expose structlog's method names)."""
    bound = logger.bind(run_id="r1")
    bound.debug("ran %s in %.1fs", "kubeadm", 1.25, host="m1", n=3)
    bound.info("plain", obj=Opaque(), custom=Custom(), nested={"a": [1, 2.5, None, True]})
    bound.warning("warned %(what)s", {"what": "twice"}, level_hint="x")
    bound.warn("alias")
    bound.error("failed", error="boom\nline 2", unicode="é→✓")
    bound.exception("with exc_info")
    bound.critical("critical")
    bound.msg("msg alias")
    bound.log(30, "by number %d", 7)
    bound.log(10, "debug by number")


def _stamps(text: str) -> tuple[list[str], str]:
    return STAMP.findall(text), STAMP.sub('"timestamp": "T"', text)


def test_json_lines_match_structlogs_pipeline(stderr: pytest.CaptureFixture[str]) -> None:
    log.configure_logging("json", verbose=2)  # structlog is imported here: configured at once
    token = log.bind_contextvars(host="etcd01", step="s1")
    try:
        _events(log.get_logger(cluster="lab"))
        ours = stderr.readouterr().err
        _events(structlog.get_logger(cluster="lab"))
        theirs = stderr.readouterr().err
    finally:
        for key, tok in token.items():
            log._var(key).reset(tok)
    our_stamps, ours = _stamps(ours)
    _, theirs = _stamps(theirs)
    assert len(our_stamps) == len(ours.splitlines()) == 10
    assert ours == theirs
    first = json.loads(ours.splitlines()[0])
    assert first["event"] == "ran kubeadm in 1.2s" and first["host"] == "m1" and first["step"] == "s1"


def test_levels_filter_like_structlog(stderr: pytest.CaptureFixture[str]) -> None:
    log.configure_logging("json", verbose=0)
    _events(log.get_logger())
    levels = [json.loads(line)["level"] for line in stderr.readouterr().err.splitlines()]
    assert levels == ["warning", "warning", "error", "error", "critical", "warning"]
    log.configure_logging("json", verbose=1)
    _events(log.get_logger())
    assert len(stderr.readouterr().err.splitlines()) == 8  # everything but the two debug events


def test_console_lines_go_through_structlog(stderr: pytest.CaptureFixture[str]) -> None:
    log.configure_logging("console", verbose=0)
    log.get_logger(host="lb01").info("hidden")
    log.get_logger(host="lb01").warning("probe failed", error="refused")
    err = stderr.readouterr().err
    assert err.endswith("[warning  ] probe failed                   error=refused host=lb01\n")
    assert err.count("\n") == 1


async def test_bound_context_is_structlogs_context() -> None:
    seen: dict[str, object] = {}

    async def work(name: str) -> None:
        await asyncio.sleep(0)
        seen[name] = structlog.contextvars.get_contextvars().get("host")

    await gather_each(["a", "b"], work, limit=2)
    assert seen == {"a": "a", "b": "b"}
    assert "host" not in structlog.contextvars.get_contextvars()


def test_logging_does_not_import_structlog_until_a_console_line() -> None:
    code = (
        "import sys, asyncio\n"
        "from hactl.log import configure_logging, get_logger\n"
        "from hactl.concurrency import gather_each\n"
        "configure_logging('json', 0)\n"
        "log = get_logger(host='x')\n"
        "log.info('dropped'); log.warning('written')\n"
        "async def one(item): get_logger().warning('in task')\n"
        "asyncio.run(gather_each(['h1'], one, limit=1))\n"
        "print('structlog' in sys.modules, 'rich' in sys.modules)\n"
        "configure_logging('console', 0)\n"
        "log.info('dropped')\n"
        "print('structlog' in sys.modules)\n"
        "log.warning('console')\n"
        "print('structlog' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False", "False", "True"]
    lines = out.stderr.splitlines()
    assert json.loads(lines[0])["event"] == "written"
    assert json.loads(lines[1]) | {"timestamp": "T"} == {
        "event": "in task", "host": "h1", "level": "warning", "timestamp": "T"
    }
    assert "console" in lines[2]
