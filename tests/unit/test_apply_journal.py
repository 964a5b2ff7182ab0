"""The journal's critical path: the longest chain of the DAG by measured step durations."""

from __future__ import annotations

from pathlib import Path

import pytest

from hactl.journal import (
    Journal,
    critical_path,
    journal_critical_path,
    journal_path,
    new_run_id,
    read_journal,
    run_wall_time,
    state_dir,
)


def test_critical_path_is_the_heaviest_chain_not_the_longest() -> None:
    durations = {"pki": 1.0, "etcd1": 5.0, "etcd2": 2.0, "lb": 1.0, "init": 10.0, "w1": 30.0}
    edges = [
        ("pki", "etcd1"),
        ("pki", "etcd2"),
        ("etcd1", "init"),
        ("etcd2", "init"),
        ("lb", "init"),
        ("lb", "w1"),
    ]
    path = critical_path(durations, edges)
    assert path.steps == ("lb", "w1") and path.length == 31.0
    durations["w1"] = 3.0
    path = critical_path(durations, edges)
    assert path.steps == ("pki", "etcd1", "init") and path.length == 16.0


def test_critical_path_ties_and_empty_graph_are_deterministic() -> None:
    assert critical_path({}, []).steps == ()
    path = critical_path({"b": 1.0, "a": 1.0}, [])
    assert path.steps == ("a",)
    # a node without a measured duration counts zero
    assert critical_path({"a": 2.0}, [("a", "z")]).length == 2.0


def test_journal_critical_path_ignores_skipped_steps(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with Journal(path) as journal:
        journal.write("run_start", run_id="r")
        journal.write("step_end", id="a", outcome="ok", duration=2.0, depends_on=[])
        journal.write("step_end", id="b", outcome="ok", duration=3.0, depends_on=["a"])
        journal.write("step_end", id="c", outcome="failed", duration=9.0, depends_on=["a"])
        journal.write("step_end", id="d", outcome="skipped", duration=0.0, depends_on=["c"])
        journal.write("run_end", duration=12.5)
    records = read_journal(path)
    assert journal_critical_path(records).steps == ("a", "c")
    assert journal_critical_path(records).length == 11.0
    assert run_wall_time(records) == 12.5
    # a torn last line (crash mid-write) is ignored
    with path.open("a") as fh:
        fh.write('{"event": "step_')
    assert len(read_journal(path)) == len(records)


def test_journal_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HACTL_STATE_DIR", raising=False)
    spec = tmp_path / "specs" / "lab.yaml"
    assert state_dir(spec) == tmp_path / "specs" / ".hactl"
    run = new_run_id()
    assert (
        journal_path(spec, "lab", run)
        == tmp_path / "specs" / ".hactl" / "journal" / "lab" / f"{run}.jsonl"
    )
    monkeypatch.setenv("HACTL_STATE_DIR", str(tmp_path / "state"))
    assert state_dir(spec) == tmp_path / "state"
    assert new_run_id() != run
