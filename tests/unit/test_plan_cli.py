"""`hactl plan / show / graph` exit codes and formats (the probe replaced by synthetic facts;
tests/lab/test_plan_lab.py runs the same commands against real hosts)."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hactl.cli import main
from hactl.plan import live
from hactl.plan.planner import Plan, build_plan
from hactl.plan.synthetic import PROBED_AT, Synthetic
from hactl.spec.models import Cluster

SPEC = str(Path(__file__).resolve().parents[2] / "specs" / "lab.yaml")


def fake_probe(monkeypatch: pytest.MonkeyPatch, state: str) -> None:
    async def make_plan(cluster: Cluster, *, spec_dir: str | None = None) -> Plan:
        s = Synthetic(cluster)
        if state == "converged":
            s.converged()
        elif state == "refused":
            s.etcd(registry_keys=3)
        return build_plan(cluster, s.observed(), now=PROBED_AT)

    monkeypatch.setattr(live, "make_plan", make_plan)


@pytest.mark.parametrize(("state", "flags", "code"), [
    ("fresh", [], 0), ("fresh", ["--detailed-exitcode"], 2),
    ("converged", ["--detailed-exitcode"], 0), ("refused", ["--detailed-exitcode"], 1),
])
def test_exit_codes(monkeypatch: pytest.MonkeyPatch, state: str, flags: list[str], code: int) -> None:
    fake_probe(monkeypatch, state)
    result = CliRunner().invoke(main, ["plan", "-f", SPEC, *flags])
    assert result.exit_code == code, result.output
    if state == "refused":
        assert "the plan is refused" in result.output and "/registry" in result.output
    elif state == "converged":
        assert result.stdout.endswith("No changes. The cluster matches the spec.\n")


def test_formats_and_saved_plan(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_probe(monkeypatch, "fresh")
    runner = CliRunner()
    out = tmp_path / "plans" / "lab.json"
    result = runner.invoke(main, ["plan", "-f", SPEC, "--json", "-o", str(out)])
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    assert doc["summary"]["text"] == "Plan: 14 to add, 0 to change, 0 to remove."
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    shown = runner.invoke(main, ["show", str(out), "--json"])
    assert json.loads(shown.stdout) == doc
    md = runner.invoke(main, ["plan", "-f", SPEC, "--format", "markdown"])
    assert md.stdout.startswith("### hactl plan: `lab`")
    text = runner.invoke(main, ["plan", "-f", SPEC])
    assert "\x1b[" not in text.stdout  # not a TTY: no colour
    assert text.stdout.endswith("Plan: 14 to add, 0 to change, 0 to remove.\n")


def test_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_probe(monkeypatch, "fresh")
    dot = CliRunner().invoke(main, ["graph", "-f", SPEC])
    assert dot.exit_code == 0 and dot.stdout.startswith('digraph "lab" {')
    assert '"master[master02].join" -> "master[master03].join";' in dot.stdout
    mermaid = CliRunner().invoke(main, ["graph", "-f", SPEC, "--format", "mermaid"])
    assert mermaid.stdout.startswith("flowchart LR") and "-->" in mermaid.stdout


