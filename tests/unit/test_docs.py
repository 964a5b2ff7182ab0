"""Docs that are generated from code must match it; the README opens with the two commands."""

from __future__ import annotations

from pathlib import Path

from hactl.spec.docgen import render

ROOT = Path(__file__).resolve().parents[2]


def test_spec_reference_matches_the_models() -> None:
    assert (ROOT / "docs" / "spec.md").read_text() == render(), (
        "docs/spec.md is out of date: run `make docs`"
    )


def test_readme_opens_with_demo_and_test() -> None:
    lines = [line for line in (ROOT / "README.md").read_text().splitlines() if line.strip()]
    commands = [
        line.split("#")[0].strip() for line in lines[:12] if line.strip().startswith("make ")
    ]
    assert commands[:2] == ["make demo", "make test"]
