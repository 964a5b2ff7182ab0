"""The plan's warnings (network.plugin none: which Nodes stay NotReady) reach every output form,
and the spec's local files (network.manifests, prepare.packages.keyFile) are read relative to
the spec file's folder, like its SSH files."""

from __future__ import annotations

import json
from pathlib import Path

from hactl.plan.output import render_json, render_markdown, render_text
from hactl.plan.planner import build_plan
from hactl.plan.synthetic import PROBED_AT, Synthetic
from hactl.spec.load import load_file
from hactl.spec.models import Cluster

ROOT = Path(__file__).resolve().parents[2]


def _none() -> Cluster:
    lab = load_file(str(ROOT / "specs" / "lab.yaml")).cluster
    return lab.model_copy(update={"network": lab.network.model_copy(update={"plugin": "none"})})


def test_the_none_warning_is_in_text_json_and_markdown() -> None:
    cluster = _none()
    plan = build_plan(cluster, Synthetic(cluster).observed(), now=PROBED_AT)
    [warning] = plan.warnings
    assert f"Warning: {warning}" in render_text(plan)
    assert json.loads(render_json(plan))["warnings"] == [warning]
    assert f"> **Warning:** {warning.replace('|', chr(92) + '|')}" in render_markdown(plan)


def test_no_warning_no_key() -> None:
    lab = load_file(str(ROOT / "specs" / "lab.yaml")).cluster
    plan = build_plan(lab, Synthetic(lab).observed(), now=PROBED_AT)
    assert plan.warnings == () and "warnings" not in json.loads(render_json(plan))
    assert "Warning:" not in render_text(plan)


def test_local_files_are_relative_to_the_spec(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    spec = tmp_path / "sub" / "spec.yaml"
    spec.write_text((ROOT / "specs" / "lab.yaml").read_text() + (
        "network:\n  plugin: manifests\n  manifests: [cni/net.yaml, /abs/net.yaml]\n"
        "prepare:\n  packages:\n    keyFile: keys/Release.key\n"))
    cluster = load_file(str(spec)).cluster
    assert cluster.network.manifests == [str(tmp_path / "sub" / "cni" / "net.yaml"), "/abs/net.yaml"]
    assert cluster.prepare is not None
    assert cluster.prepare.packages.key_file == str(tmp_path / "sub" / "keys" / "Release.key")
