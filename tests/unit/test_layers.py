"""Layers import downward only (house style): a module may import its own layer and lower ones.

cli → apply/check/lock/journal → plan → diff → probe/facts/transport, render → spec.
``spec`` imports nothing of hactl; the lab's stand-ins import nothing outside ``hactl.lab``
(besides the cryptography-only ``hactl.render.pki``), since they run under Debian's Python.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "hactl"

RANK = {
    "hactl.spec": 0,
    "hactl.errors": 0,
    "hactl.sensitive": 0,
    "hactl.log": 0,
    "hactl.render": 1,
    "hactl.transport": 1,
    "hactl.concurrency": 1,
    "hactl.facts": 2,
    "hactl.probe": 2,
    "hactl.diff": 3,
    "hactl.plan": 4,
    "hactl.journal": 5,
    "hactl.lock": 5,
    "hactl.check": 5,
    "hactl.apply": 6,
    "hactl.drill": 6,
    "hactl.lab": 6,
    "hactl.cli": 7,
}


def _rank(module: str) -> int | None:
    best = None
    for prefix, rank in RANK.items():
        if module == prefix or module.startswith(prefix + "."):
            best = rank
    return best


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return [m for m in found if m.startswith("hactl")]


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def test_layers_import_downward_only() -> None:
    problems = []
    for path in sorted(PKG.rglob("*.py")):
        name = _module_name(path)
        own = _rank(name)
        if own is None:
            continue
        for imported in _imports(path):
            rank = _rank(imported)
            if rank is not None and rank > own:
                problems.append(f"{name} imports {imported} (layer {rank} above {own})")
    assert problems == []


def test_spec_imports_nothing_else_of_hactl() -> None:
    for path in (PKG / "spec").rglob("*.py"):
        for imported in _imports(path):
            assert imported.startswith(("hactl.spec", "hactl.errors.")), (path, imported)


def test_standins_stay_inside_the_lab() -> None:
    allowed = ("hactl.lab", "hactl.render.pki")
    for path in (PKG / "lab" / "standins").rglob("*.py"):
        for imported in _imports(path):
            assert imported.startswith(allowed), (path, imported)
