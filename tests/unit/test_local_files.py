"""L7: what hactl writes on the operator's machine is private: journal files 0600 in folders
0700 (``.hactl/`` next to the spec), never through a planted symlink; the saved plan's temporary
file is created with ``O_EXCL | O_NOFOLLOW`` under an unguessable name."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hactl.errors import HactlError
from hactl.journal import Journal, journal_path
from hactl.plan import planfile
from hactl.plan.planner import Plan, build_plan
from hactl.plan.synthetic import PROBED_AT, Synthetic
from hactl.spec.load import load_file

ROOT = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)  # the usual operator umask: what hactl must not rely on
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def plan() -> Plan:
    lab = load_file(str(ROOT / "specs" / "lab.yaml")).cluster
    return build_plan(lab, Synthetic(lab).observed(), now=PROBED_AT)


def test_journal_file_0600_and_its_folders_0700(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_022: None
) -> None:
    monkeypatch.delenv("HACTL_STATE_DIR", raising=False)
    spec = tmp_path / "repo" / "cluster.yaml"
    spec.parent.mkdir()
    (spec.parent / ".hactl").mkdir(mode=0o755)  # made by an older hactl
    path = journal_path(spec, "lab", "20261202T000000Z-abcdef")
    with Journal(path) as journal:
        journal.write("run_start", run_id="x")
    assert mode(path) == 0o600
    assert [mode(p) for p in (path.parent, path.parent.parent, spec.parent / ".hactl")] == [
        0o700
    ] * 3
    assert mode(spec.parent) == 0o755  # the operator's own folder is left alone


def test_an_existing_state_dir_is_left_alone_and_what_hactl_makes_in_it_is_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_022: None
) -> None:
    shared = tmp_path / "state"
    shared.mkdir(mode=0o755)
    monkeypatch.setenv("HACTL_STATE_DIR", str(shared))
    path = journal_path(tmp_path / "spec.yaml", "lab", "run")
    path.parent.mkdir(parents=True, mode=0o755)  # an older hactl made them 0755
    (shared / "journal").chmod(0o755)
    path.write_text("")
    path.chmod(0o644)
    with Journal(path) as journal:
        journal.write("run_start")
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert mode(shared / "journal") == 0o700 and mode(shared) == 0o755


def test_a_symlink_in_place_of_the_journal_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    path = tmp_path / "journal" / "lab" / "run.jsonl"
    path.parent.mkdir(parents=True)
    path.symlink_to(victim)
    with pytest.raises(OSError), Journal(path) as journal:
        journal.write("run_start")
    assert victim.read_text() == "precious\n"


def test_plan_temp_file_is_never_a_planted_symlink(
    plan: Plan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = tmp_path / "plan.json"
    # the name the temporary file had before (PATH.tmp-PID): planted by another local user
    Path(f"{target}.tmp-{os.getpid()}").symlink_to(victim)
    planfile.save(plan, str(target))
    assert victim.read_text() == "precious\n"
    assert not target.is_symlink() and mode(target) == 0o600

    # even a planted file at the exact (random) name is refused, not followed or truncated
    import secrets

    monkeypatch.setattr(secrets, "token_hex", lambda _n: "planted")
    Path(f"{target}.tmp-{os.getpid()}-planted").symlink_to(victim)
    with pytest.raises(HactlError, match=r"cannot write the saved plan .*plan.json: File exists"):
        planfile.save(plan, str(target))
    assert victim.read_text() == "precious\n"
    assert Path(f"{target}.tmp-{os.getpid()}-planted").is_symlink()  # not ours: left alone
