"""The layering of docs/architecture.md ("Layering") is import-linter contracts in pyproject.toml.

`make lint` (and so `make test`) runs `lint-imports`; these tests run it too, so `make unit` and a
plain pytest see a broken layer, and they prove that the contracts see what the old AST test
skipped: relative imports (`from ..plan import graph`), function-level ones and imports of the
lab's stand-ins.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter not installed")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root), "NO_COLOR": "1"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_tree_keeps_its_contracts() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_relative_and_function_level_imports_break_a_contract(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "hactl", tmp_path / "hactl", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with (tmp_path / "hactl" / "facts" / "system.py").open("a") as f:
        f.write("\nfrom ..plan import graph  # upward, relative\n")
    with (tmp_path / "hactl" / "lab" / "units.py").open("a") as f:
        f.write("\n\ndef _f() -> None:\n    from .. import diff  # the lab into the product\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "hactl.facts.system -> hactl.plan.graph" in result.stdout
    assert "hactl.lab.units -> hactl.diff" in result.stdout


def test_docs_state_every_contract() -> None:
    """docs/architecture.md ("Layering") names every contract of pyproject.toml."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    docs = " ".join((ROOT / "docs" / "architecture.md").read_text().split())
    for contract in config["tool"]["importlinter"]["contracts"]:
        assert f"**{contract['name']}**" in docs, contract["name"]
