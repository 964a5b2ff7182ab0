"""The apply journal: one JSON-lines file per run with every step's start, end and outcome.

Where: ``<state dir>/journal/<cluster>/<run-id>.jsonl``. The state dir is ``$HACTL_STATE_DIR``
when set, else ``.hactl/`` next to the spec (or next to the saved plan for ``hactl apply FILE``).
Nothing secret is written: error texts are masked before they reach the journal. Still, host
names and stderr lines are the operator's business only: journal files are created 0600 and the
folders hactl makes for them 0700 (``.hactl/`` itself, ``journal/`` and ``journal/<cluster>/``;
existing ones are tightened; a ``$HACTL_STATE_DIR`` that exists is left as it is). A symlink in
place of a journal file is refused (``O_NOFOLLOW``).

Records (one JSON object per line, ``event`` says which):

- ``run_start``: run_id, cluster, plan_id, parallelism, wall (ISO, UTC), mono (``time.monotonic``)
- ``step_start``: id, host, attempt, wall, mono
- ``step_retry``: id, host, attempt, delay, error
- ``step_end``: id, host, title, action, address, depends_on, outcome
  (``ok`` | ``failed`` | ``skipped``), attempts, start_mono, end_mono, duration, start_wall,
  end_wall, error
- ``run_end``: outcome, duration, added, changed, removed, failed, skipped

:func:`critical_path` gives the longest chain of the DAG by measured step durations; the
benchmark compares an apply's wall time against it (target ≤ 1.10×).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import networkx as nx

STATE_DIR_ENV = "HACTL_STATE_DIR"


def now_wall() -> str:
    """Wall-clock time as ISO 8601 UTC with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def new_run_id() -> str:
    """``20261126T224300Z-1a2b3c``: sortable by time, unique enough for concurrent runs."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def state_dir(anchor: str | Path) -> Path:
    """The state folder for a spec or plan file: ``$HACTL_STATE_DIR`` or ``<its dir>/.hactl``."""
    env = os.environ.get(STATE_DIR_ENV)
    if env:
        return Path(env)
    return Path(anchor).resolve().parent / ".hactl"


def journal_path(anchor: str | Path, cluster: str, run_id: str) -> Path:
    return state_dir(anchor) / "journal" / cluster / f"{run_id}.jsonl"


def private_dirs(folder: Path) -> None:
    """Make ``folder`` and the missing folders above it with mode 0700, and tighten to 0700 the
    existing ones hactl owns: ``…/journal/<cluster>``, ``…/journal`` and a ``.hactl`` above."""
    missing: list[Path] = []
    probe = folder
    while not probe.exists() and probe.parent != probe:
        missing.append(probe)
        probe = probe.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
    owned = list(missing)
    if folder.parent.name == "journal":
        owned += [folder, folder.parent]
        if folder.parent.parent.name == ".hactl":
            owned.append(folder.parent.parent)
    for path in owned:
        if not path.is_symlink() and path.stat().st_mode & 0o077:
            path.chmod(0o700)


def open_private(path: Path) -> IO[str]:
    """Open ``path`` for appending, mode 0600 (also when it existed), never through a symlink."""
    private_dirs(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        return os.fdopen(fd, "a", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


class Journal:
    """Appends records to a JSON-lines file, flushed after each line (a crash keeps the start)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: IO[str] | None = None
        self._mutex = threading.Lock()
        self.records: list[dict[str, Any]] = []
        """Every record written (kept in memory too, for the summary and for tests)."""

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, event: str, **fields: Any) -> None:
        record: dict[str, Any] = {"event": event, **fields}
        self.records.append(record)
        if self.path is None:
            return
        with self._mutex:
            if self._file is None:
                self._file = open_private(self.path)
            self._file.write(json.dumps(record, sort_keys=True, default=str) + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._mutex:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_journal(path: str | Path) -> list[dict[str, Any]]:
    """All records of a journal file, in order (a torn last line is ignored)."""
    records: list[dict[str, Any]] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


@dataclass(frozen=True)
class CriticalPath:
    length: float
    """Sum of the measured durations (seconds) along the chain."""
    steps: tuple[str, ...]
    """Step ids, first to last."""


def critical_path(durations: Mapping[str, float], edges: Iterable[tuple[str, str]]) -> CriticalPath:
    """Longest chain of a DAG weighted by step durations (steps without a duration count 0).

    ``edges`` are ``(before, after)`` pairs. Ties go to the lexicographically smaller id so the
    answer is deterministic.
    """
    graph: nx.DiGraph = nx.DiGraph()
    graph.add_nodes_from(durations)
    graph.add_edges_from(edges)
    best: dict[str, tuple[float, tuple[str, ...]]] = {}
    for node in nx.lexicographical_topological_sort(graph):
        own = float(durations.get(node, 0.0))
        preds = sorted(graph.predecessors(node))
        base: tuple[float, tuple[str, ...]] = (0.0, ())
        for pred in preds:
            if best[pred][0] > base[0]:
                base = best[pred]
        best[node] = (base[0] + own, (*base[1], node))
    if not best:
        return CriticalPath(0.0, ())
    top = min(best.values(), key=lambda item: (-item[0], item[1][-1]))
    return CriticalPath(round(top[0], 6), top[1])


def journal_critical_path(records: Iterable[Mapping[str, Any]]) -> CriticalPath:
    """The critical path of one run from its ``step_end`` records (skipped steps excluded)."""
    durations: dict[str, float] = {}
    edges: list[tuple[str, str]] = []
    for record in records:
        if record.get("event") != "step_end" or record.get("outcome") == "skipped":
            continue
        step_id = str(record["id"])
        durations[step_id] = float(record.get("duration") or 0.0)
        edges.extend((str(dep), step_id) for dep in record.get("depends_on", ()))
    edges = [(a, b) for a, b in edges if a in durations]
    return critical_path(durations, edges)


def run_wall_time(records: Iterable[Mapping[str, Any]]) -> float | None:
    """The run's measured duration from its ``run_end`` record, if it has one."""
    for record in records:
        if record.get("event") == "run_end":
            return float(record["duration"])
    return None
