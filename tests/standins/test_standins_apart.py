"""The stand-ins stand apart from what they test (docs/lab.md, "The stand-ins stand apart").

Every module of ``hactl/lab/standins`` may import the standard library, ``yaml``,
``cryptography`` and ``hactl.lab.standins`` — nothing else, above all no hactl product module
(``hactl.render.pki`` included): a stand-in that shared hactl's code would let a bug in that code
pass unseen. Checked statically (every ``import``, ``from … import`` — relative ones resolved — and
``importlib.import_module``/``__import__`` of a literal name) and at run time under Debian's
``/usr/bin/python3``, the interpreter the lab nodes run the stand-ins with.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STANDINS = REPO / "hactl" / "lab" / "standins"
PACKAGE = "hactl.lab.standins"
THIRD_PARTY = {"yaml", "cryptography"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(source: str, module: str, *, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, the source of ``module``."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                parts = package.split(".")
                if node.level - 1 >= len(parts):
                    found.append((node.lineno, "." * node.level + (node.module or "")))  # beyond the top
                    continue
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                if node.module:
                    base = f"{base}.{node.module}"
            found.append((node.lineno, base))
            # `from hactl.lab import standins` / `from .. import render`: the names are modules too
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*"]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if name in ("import_module", "__import__") and isinstance(first, ast.Constant) \
                    and isinstance(first.value, str) and not first.value.startswith("."):
                found.append((node.lineno, first.value))
    return found


def forbidden(name: str) -> bool:
    """True for a hactl module outside the stand-ins' package (or a relative import past the top)."""
    if name.startswith("."):
        return True
    if name != "hactl" and not name.startswith("hactl."):
        return False
    return name != PACKAGE and not name.startswith(PACKAGE + ".")


def _standin_modules() -> list[Path]:
    paths = sorted(STANDINS.rglob("*.py"))
    assert len(paths) > 20, "expected the stand-ins' modules under hactl/lab/standins"
    return paths


def test_no_standin_imports_hactl_outside_its_package() -> None:
    problems = []
    for path in _standin_modules():
        source = path.read_text()
        for line, name in imported_names(source, _module_name(path),
                                         is_package=path.name == "__init__.py"):
            if forbidden(name):
                problems.append(f"{path.relative_to(REPO)}:{line}: imports {name}")
    assert problems == [], "\n".join(problems)


def test_standins_import_only_the_stdlib_yaml_cryptography_and_themselves() -> None:
    allowed = set(sys.stdlib_module_names) | THIRD_PARTY | {"__future__"}
    problems = []
    for path in _standin_modules():
        for line, name in imported_names(path.read_text(), _module_name(path),
                                         is_package=path.name == "__init__.py"):
            top = name.split(".")[0]
            if top == "hactl":
                continue  # the test above
            if top not in allowed:
                problems.append(f"{path.relative_to(REPO)}:{line}: imports {name}")
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(("source", "module", "bad"), [
    ("from hactl.render import pki", "hactl.lab.standins.kubeadm_pki", True),
    ("import hactl.render.pki", "hactl.lab.standins.kubeadm_pki", True),
    ("from ...render import pki", "hactl.lab.standins.kubeadm_pki", True),
    ("from ...render.pki import spki_sha256", "hactl.lab.standins.kubeadm_pki", True),
    ("from .. import lab", "hactl.lab.standins.kubeadm_pki", True),
    ("from ..supervisor import x", "hactl.lab.standins.systemctl", True),
    ("from ... import errors", "hactl.lab.standins.kubeadm_pki", True),
    ("from .... import x", "hactl.lab.standins.kubeadm_pki", True),
    ("from hactl import sensitive", "hactl.lab.standins.kubeadm_pki", True),
    ("import importlib\nimportlib.import_module('hactl.spec.models')", "hactl.lab.standins.x", True),
    ("__import__('hactl.plan')", "hactl.lab.standins.x", True),
    ("from .pkiutil import Pair", "hactl.lab.standins.kubeadm_pki", False),
    ("from . import apiserver_resources as res", "hactl.lab.standins.kube_apiserver", False),
    ("from hactl.lab.standins.kubeapi import Client", "hactl.lab.standins.x", False),
    ("from . import binversion", "hactl.lab.standins", False),
    ("from cryptography import x509", "hactl.lab.standins.x", False),
    ("import yaml, os", "hactl.lab.standins.x", False),
])
def test_the_fence_sees_absolute_relative_and_dynamic_imports(source: str, module: str, bad: bool) -> None:
    names = [name for _, name in imported_names(source, module, is_package=module == PACKAGE)]
    assert any(forbidden(name) for name in names) is bad, names


def test_debian_python_loads_no_hactl_product_module_with_the_standins() -> None:
    """Import every stand-in module under /usr/bin/python3: only ``hactl`` and ``hactl.lab`` (the
    parent packages, which stay import-light) may be loaded besides the stand-ins themselves."""
    script = (
        "import importlib, json, pkgutil, sys\n"
        "import hactl.lab.standins as s\n"
        "for m in pkgutil.iter_modules(s.__path__):\n"
        "    importlib.import_module(s.__name__ + '.' + m.name)\n"
        "print(json.dumps(sorted(n for n in sys.modules if n == 'hactl' or n.startswith('hactl.'))))\n"
    )
    done = subprocess.run(["/usr/bin/python3", "-c", script], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, cwd="/",
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert any(name.startswith(PACKAGE + ".") for name in loaded)
    outside = [name for name in loaded if forbidden(name) and name not in ("hactl", "hactl.lab")]
    assert outside == []
