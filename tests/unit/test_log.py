"""hactl.log: structlog writes every line, but is imported only for a line that passes the level."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, check=True, timeout=60)  # fmt: skip


def test_lines_below_the_level_never_import_structlog() -> None:
    proc = run(
        "import sys\n"
        "from hactl.log import configure_logging, get_logger, bind_contextvars\n"
        "configure_logging('json', verbose=0)\n"
        "bind_contextvars(host='etcd01')\n"
        "log = get_logger(run_id='r1').bind(step='s1')\n"
        "log.debug('quiet'); log.info('quiet too')\n"
        "print('structlog' in sys.modules, 'rich' in sys.modules)\n"
    )
    assert proc.stdout.split() == ["False", "False"]
    assert proc.stderr == ""


def test_a_line_at_the_level_is_structlogs_json_with_context_and_bound_values() -> None:
    proc = run(
        "import asyncio\n"
        "from hactl.log import configure_logging, get_logger, bind_contextvars, bound\n"
        "configure_logging('json', verbose=1)\n"
        "async def task(name):\n"
        "    bind_contextvars(host=name)\n"
        "    get_logger(run_id='r1').bind(step='s1').info('step.done', seconds=1.5)\n"
        "    get_logger().debug('not shown')\n"
        "async def main():\n"
        "    await asyncio.gather(task('etcd01'), task('lb01'))\n"
        "asyncio.run(main())\n"
        "assert bound() == {}, bound()\n"
    )
    lines = [json.loads(line) for line in proc.stderr.splitlines()]
    assert sorted(line["host"] for line in lines) == ["etcd01", "lb01"]
    for line in lines:
        assert line["event"] == "step.done" and line["level"] == "info"
        assert line["run_id"] == "r1" and line["step"] == "s1" and line["seconds"] == 1.5
        assert line["timestamp"].endswith("Z")
    assert proc.stdout == ""


def test_console_format_and_warning_default() -> None:
    proc = run(
        "from hactl.log import configure_logging, get_logger\n"
        "configure_logging('console')\n"
        "get_logger(host='lb01').info('hidden')\n"
        "get_logger(host='lb01').warning('lock.lost', holder='x')\n"
    )
    assert "hidden" not in proc.stderr
    assert "lock.lost" in proc.stderr and "host" in proc.stderr and "holder" in proc.stderr
