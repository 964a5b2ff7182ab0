"""lost_script: what is left of a command whose SSH connection died is stopped only when it is
still the same process group (its leader's PID and start time), here on this machine."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hactl.transport.process_group import lost_script, take_tag, wrap


def _start(script: str) -> tuple[subprocess.Popen[bytes], int, int]:
    proc = subprocess.Popen(
        ["sh", "-c", wrap(script)], stderr=subprocess.PIPE, start_new_session=True
    )
    assert proc.stderr is not None
    pgid, start, _ = take_tag(proc.stderr.readline())
    proc.stderr.close()  # the commands here print nothing more
    assert pgid == proc.pid and start is not None
    return proc, pgid, start


def _group(pgid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] not in {"Z", "X"}:
                found.append(int(entry.name))
    return found


def _lost(pgid: int, start: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", lost_script(pgid, start)], capture_output=True, text=True, timeout=20
    )


def test_the_tag_carries_the_leaders_start_time() -> None:
    assert take_tag(b"hactl-pgid=42 1234\nrest") == (42, 1234, b"rest")
    assert take_tag(b"hactl-pgid=42\nrest") == (42, None, b"rest")  # /proc unreadable
    assert take_tag(b"hactl-pgid=1 5\nrest") == (None, None, b"rest")
    assert take_tag(b"other\n") == (None, None, b"other\n")


def test_the_same_group_is_killed_whole() -> None:
    proc, pgid, start = _start("sleep 300 & sleep 300")
    try:
        done = _lost(pgid, start)
        assert (done.returncode, done.stdout) == (0, "same\n")
        assert _group(pgid) == []
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_another_process_with_that_number_is_left_alone() -> None:
    proc, pgid, start = _start("sleep 300")
    try:
        done = _lost(pgid, start - 1)  # the number is reused by a process started later
        assert (done.returncode, done.stdout) == (0, "other\n")
        assert _group(pgid) != []
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_members_left_by_a_dead_leader_are_killed_when_started_after_it() -> None:
    proc, pgid, start = _start("sleep 300 & exit 0")  # the leader ends, its child stays
    proc.wait(timeout=10)
    try:
        assert _group(pgid) != []
        later = _lost(pgid, start + 10**9)  # started before the lost leader: not ours
        assert (later.returncode, later.stdout) == (0, "none\n") and _group(pgid) != []
        done = _lost(pgid, start)
        assert (done.returncode, done.stdout) == (0, "members\n")
        assert _group(pgid) == []
    finally:
        subprocess.run(["sh", "-c", f"kill -KILL -{pgid} 2>/dev/null"], check=False)


def test_nothing_left_is_confirmed_at_once() -> None:
    proc, pgid, start = _start("true")
    proc.wait(timeout=10)
    done = _lost(pgid, start)
    assert (done.returncode, done.stdout) == (0, "none\n")


@pytest.mark.parametrize("bad", [0, 1, -5])
def test_groups_below_two_are_refused(bad: int) -> None:
    with pytest.raises(ValueError):
        lost_script(bad, 1)
