"""Saved plans: mode 0600, no secrets, a round trip that prints the same plan and runs the same
steps; `hactl show` on a saved file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from hactl.cli import main
from hactl.errors import HactlError
from hactl.plan import output, planfile
from hactl.plan.planner import build_plan
from hactl.plan.synthetic import PROBED_AT, Synthetic
from hactl.spec.load import load_file

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def plan():  # type: ignore[no-untyped-def]
    lab = load_file(str(ROOT / "specs" / "lab.yaml")).cluster
    return build_plan(lab, Synthetic(lab).observed(), now=PROBED_AT)


def test_round_trip_mode_0600_and_same_output(plan, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "plans" / "lab.plan.json"
    planfile.save(plan, str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    path.chmod(0o644)
    planfile.save(plan, str(path))  # an existing file is made 0600 again
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = planfile.load(str(path))
    assert output.render_text(loaded) == output.render_text(plan)
    assert output.render_json(loaded) == output.render_json(plan)
    assert [s.to_data() for s in loaded.steps()] == [s.to_data() for s in plan.steps()]
    assert [type(s) for s in loaded.steps()] == [type(s) for s in plan.steps()]
    assert loaded.graph.edges() == plan.graph.edges()
    assert loaded.fingerprint == plan.fingerprint
    assert loaded.cluster == plan.cluster
    assert list(tmp_path.joinpath("plans").iterdir()) == [path]  # no temp file left


def test_saved_plan_holds_no_secrets(plan, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "p.json"
    planfile.save(plan, str(path))
    text = path.read_text()
    assert "PRIVATE KEY" not in text
    doc = json.loads(text)
    assert doc["saved"]["spec"]["metadata"]["name"] == "lab"
    assert doc["hactl_version"] and doc["format_version"] == "1"


def test_not_a_plan_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    with pytest.raises(HactlError, match="not a saved hactl plan"):
        planfile.load(str(bad))
    bad.write_text('{"format_version": "99", "saved": {}}')
    with pytest.raises(HactlError, match="plan format '99'"):
        planfile.load(str(bad))
    with pytest.raises(HactlError, match="cannot read saved plan"):
        planfile.load(str(tmp_path / "missing.json"))


def test_hactl_show(plan, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "p.json"
    planfile.save(plan, str(path))
    runner = CliRunner()
    result = runner.invoke(main, ["show", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output == output.render_text(plan)
    result = runner.invoke(main, ["show", str(path), "--json"])
    assert json.loads(result.output) == json.loads(output.render_json(plan))
    result = runner.invoke(main, ["show", str(tmp_path / "nope.json")])
    assert result.exit_code == 1
