"""The wrapper that puts every remote command in its own process group, and the kill script,
run with the local /bin/sh (the same scripts the transport sends to a host)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from hactl.transport.process_group import kill_script, take_pgid, wrap


def _start(script: str, *, leader: bool) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=leader,  # like sshd's setsid() for a session
    )


def _first_line(proc: subprocess.Popen[bytes]) -> bytes:
    assert proc.stderr is not None
    return proc.stderr.readline()


def _group_alive(pgid: int) -> bool:
    """A process of the group that is not a zombie (orphans are reaped by PID 1, if at all)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in {"Z", "X"}:
            return True
    return False


@pytest.mark.parametrize("leader", [True, False], ids=["session-leader", "needs-setsid"])
def test_the_wrapper_reports_its_own_group_and_keeps_status_and_output(leader: bool) -> None:
    proc = _start(wrap("echo out; echo err >&2; exit 3"), leader=leader)
    out, err = proc.communicate(timeout=10)
    pgid, rest = take_pgid(err)
    assert pgid is not None and pgid != os.getpgrp()
    assert (proc.returncode, out, rest) == (3, b"out\n", b"err\n")
    if leader:
        assert pgid == proc.pid  # no extra process: the shell itself


@pytest.mark.parametrize("leader", [True, False], ids=["session-leader", "needs-setsid"])
@pytest.mark.parametrize("backstop", [None, 60.0], ids=["eval", "timeout"])
def test_the_kill_script_stops_the_whole_group(leader: bool, backstop: float | None) -> None:
    proc = _start(wrap("sleep 30 & sleep 30 & wait", backstop=backstop), leader=leader)
    try:
        pgid, _ = take_pgid(_first_line(proc))
        assert pgid is not None and pgid != os.getpgrp()
        time.sleep(0.2)
        assert _group_alive(pgid)
        killed = subprocess.run(["sh", "-c", kill_script(pgid)], capture_output=True, timeout=20)
        assert killed.returncode == 0, killed.stderr
        proc.wait(timeout=10)
        assert not _group_alive(pgid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_the_backstop_stops_the_command_without_hactl() -> None:
    text = wrap("sleep 30", backstop=-29.5)  # the host's own limit: 0.5 s
    started = time.monotonic()
    proc = subprocess.run(["sh", "-c", text], capture_output=True, timeout=20)
    assert time.monotonic() - started < 10
    assert proc.returncode == 124  # timeout(1): the command timed out


def test_no_group_below_two_is_ever_signalled() -> None:
    assert take_pgid(b"hactl-pgid=1\nrest") == (None, b"rest")
    assert take_pgid(b"hactl-pgid=0\n") == (None, b"")
    assert take_pgid(b"other\nhactl-pgid=5\n") == (None, b"other\nhactl-pgid=5\n")
    for bad in (-1, 0, 1):
        with pytest.raises(ValueError):
            kill_script(bad)


def test_a_gone_group_is_confirmed_at_once() -> None:
    proc = subprocess.Popen(["true"], start_new_session=True)
    proc.wait()
    done = subprocess.run(["sh", "-c", kill_script(proc.pid)], capture_output=True, timeout=10)
    assert done.returncode == 0
