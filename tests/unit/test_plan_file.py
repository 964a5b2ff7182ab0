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
    assert doc["hactl_version"] and doc["format_version"] == "2"


def test_not_a_plan_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    with pytest.raises(HactlError, match="not a saved hactl plan"):
        planfile.load(str(bad))
    bad.write_text('{"format_version": "99", "saved": {}}')
    with pytest.raises(HactlError, match="plan format '99'"):
        planfile.load(str(bad))
    # a plan saved before the typed actions and intents (format 1) is refused, never guessed at
    bad.write_text('{"format_version": "1", "saved": {}, "changes": [{"actions": ["create"]}]}')
    with pytest.raises(HactlError, match=r"plan format '1'; this hactl .* reads format '2'"):
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


# -- L1 / L9: a malformed saved plan is refused with a clear error, never a traceback ----------


def _doc(plan) -> dict:  # type: ignore[no-untyped-def]
    return planfile.to_document(plan)


def _mutations(plan):  # type: ignore[no-untyped-def]
    """(name, document or raw bytes, what the error must say): the review's seven and more."""
    doc = _doc(plan)
    first, second = doc["saved"]["steps"][0]["id"], doc["saved"]["steps"][1]["id"]

    def edit(fn):  # type: ignore[no-untyped-def]
        copy = json.loads(json.dumps(doc))
        fn(copy)
        return copy

    yield "random bytes", b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "not UTF-8 text"
    yield "truncated JSON", json.dumps(doc)[:500].encode(), "not JSON"
    yield "missing spec", edit(lambda d: d["saved"].pop("spec")), "saved.spec: is missing"
    yield "missing fingerprint", edit(lambda d: d.pop("fingerprint")), "fingerprint: is missing"
    yield (
        "invalid spec",
        edit(lambda d: d["saved"]["spec"]["etcd"].update(clientPort="x")),
        "saved.spec.etcd.clientPort",
    )
    yield (
        "unknown step kind",
        edit(lambda d: d["saved"]["steps"][0].update(kind="format_disks")),
        "saved.steps[0]: unknown step kind 'format_disks'",
    )
    yield (
        "bad edge",
        edit(lambda d: d["saved"]["edges"].append([first, "nowhere"])),
        "no step has the id 'nowhere'",
    )
    yield (
        "cycle",
        edit(lambda d: d["saved"]["edges"].extend([[first, second], [second, first]])),
        "in a cycle",
    )
    yield "changes: 5", edit(lambda d: d.update(changes=5)), "changes: must be a list, not 5"
    yield (
        "timeout: soon",
        edit(lambda d: d["saved"]["steps"][0].update(timeout="soon")),
        "field 'timeout': must be a number, not a string 'soon'",
    )
    yield (
        "unknown field",
        edit(lambda d: d["saved"]["steps"][0].update(command="rm -rf /")),
        "unknown field(s) for kind",
    )
    yield (
        "host not in the spec",
        edit(lambda d: d["saved"]["steps"][0].update(host="elsewhere")),
        "host 'elsewhere' is not a host of the spec",
    )
    yield (
        "negative timeout",
        edit(lambda d: d["saved"]["steps"][0].update(timeout=-1)),
        "'timeout' must be a positive number",
    )
    yield "a list", [1, 2], "is not a saved hactl plan"
    yield (
        "bad action",
        edit(lambda d: d["changes"][0].update(actions=["explode"])),
        "changes[0].actions: must be one of",
    )
    yield (
        "action unlike actions",
        edit(lambda d: d["changes"][0].update(action="delete")),
        "changes[0].action: must be",
    )
    yield (
        "unknown intent",
        edit(lambda d: d["changes"][0].update(intents=["explode"])),
        "changes[0].intents: must be a list of",
    )
    yield (
        "not an address",
        edit(lambda d: d["changes"][0].update(address="x[a]")),
        "changes[0].address: 'x[a]' is not a plan address",
    )


def test_malformed_plans_are_refused_by_show_and_by_apply_before_any_connection(
    plan,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    import hactl.apply.run as run

    def no_connections(*_a: object, **_k: object) -> None:
        raise AssertionError("a malformed plan must be refused before connecting")

    monkeypatch.setattr(run, "connections", no_connections)
    runner = CliRunner()
    for i, (name, content, says) in enumerate(_mutations(plan)):
        path = tmp_path / f"bad{i}.json"
        data = content if isinstance(content, bytes) else json.dumps(content).encode()
        path.write_bytes(data)
        for argv in (["show", str(path)], ["apply", str(path)]):
            res = runner.invoke(main, argv)
            assert res.exit_code == 1, (name, argv, res.output, res.exception)
            assert isinstance(res.exception, SystemExit), (name, res.exception)
            assert f"Error: {path}" in res.output, (name, res.output)
            assert says in res.output, (name, res.output)


def test_step_fields_are_type_checked_on_load(plan) -> None:  # type: ignore[no-untyped-def]
    from hactl.plan.step import Step, StepDataError

    data = next(iter(plan.steps())).to_data()
    assert Step.from_data(data) == next(iter(plan.steps()))
    for field, value, says in (
        ("timeout", "soon", "must be a number"),
        ("timeout", True, "must be a number, not a boolean"),
        ("host", 7, "must be a string or null"),
        ("id", None, "must be a string"),
        ("action", "destroy", "must be one of"),
    ):
        with pytest.raises(StepDataError, match=says):
            Step.from_data({**data, field: value})
    without = {k: v for k, v in data.items() if k != "title"}
    with pytest.raises(StepDataError, match="required field 'title' is missing"):
        Step.from_data(without)
