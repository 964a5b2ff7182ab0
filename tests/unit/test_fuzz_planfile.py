"""Standing defence (issue 11, L1): random bytes and mutated valid saved plans through
`hactl show FILE` and `hactl apply FILE`: never a traceback, exit 0 or 1 with a message naming
the file, bounded time; a plan that does not load is refused before any host is contacted."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hactl.apply.run as run
from hactl.cli import main
from hactl.errors import HactlError
from hactl.plan import planfile
from hactl.plan.planner import build_plan
from hactl.plan.synthetic import PROBED_AT, Synthetic
from hactl.spec.load import load_file

ROOT = Path(__file__).resolve().parents[2]
SECONDS = 5.0
"""Bound per command (a real one takes well under 0.5 s; the margin is for a loaded machine)."""

_lab = load_file(str(ROOT / "specs" / "lab.yaml")).cluster
VALID = planfile.to_document(build_plan(_lab, Synthetic(_lab).observed(), now=PROBED_AT))


def _paths(node: Any, here: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield here
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*here, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*here, i))


PATHS = [p for p in _paths(VALID) if p]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


class Reached(HactlError):
    pass


@contextmanager
def no_hosts() -> Iterator[list[str]]:
    """`apply FILE` may get as far as connecting only with a plan that loads; record it."""
    reached: list[str] = []

    def connections(*_a: object, **_k: object) -> None:
        reached.append("connect")
        raise Reached("stop: the fuzz test reached the point of connecting to the hosts")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run, "connections", connections)
        yield reached


def _invoke(argv: list[str]) -> tuple[int, str, BaseException | None]:
    start = time.monotonic()
    res = CliRunner().invoke(main, argv)
    assert time.monotonic() - start < SECONDS, argv
    return res.exit_code, res.output, res.exception


def _check(path: Path) -> None:
    try:
        planfile.load(str(path))
        loads = True
    except HactlError:
        loads = False
    code, out, exc = _invoke(["show", str(path)])
    assert exc is None or isinstance(exc, SystemExit), out
    assert code == (0 if loads else 1), out
    if not loads:
        assert f"Error: {path}" in out or f"Error: cannot read saved plan {path}" in out, out
    with no_hosts() as reached:
        code, out, exc = _invoke(["apply", str(path)])
    assert isinstance(exc, SystemExit) and code == 1, (out, exc)
    assert reached == (["connect"] if loads else []), out  # refused before any host contact
    assert "Traceback" not in out


FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(data=st.binary(max_size=2048))
def test_random_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "plan.json"
    path.write_bytes(data)
    _check(path)


@FUZZ
@given(
    where=st.sampled_from(PATHS),
    how=st.sampled_from(["delete", "replace", "wrap"]),
    value=json_values,
)
def test_mutated_valid_plans(tmp_path: Path, where: tuple[Any, ...], how: str, value: Any) -> None:
    doc = json.loads(json.dumps(VALID))
    parent = doc
    for key in where[:-1]:
        parent = parent[key]
    last = where[-1]
    if how == "delete":
        del parent[last]
    elif how == "wrap":
        parent[last] = [parent[last]]
    else:
        parent[last] = value
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(doc))
    _check(path)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cut=st.integers(0, len(json.dumps(VALID)) - 1))
def test_truncated_plans(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(VALID)[:cut])
    _check(path)


def test_the_unmutated_plan_loads_and_reaches_the_hosts(tmp_path: Path) -> None:
    """The harness itself: a valid plan is shown (exit 0) and apply gets to connecting."""
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(VALID))
    _check(path)
    code, out, _ = _invoke(["show", str(path)])
    assert code == 0 and "Plan:" in out
