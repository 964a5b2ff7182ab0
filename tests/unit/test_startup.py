"""Start-up cost: a command imports what it uses, when it uses it (structural checks, no timers).

Each check runs a fresh interpreter and looks at ``sys.modules``: the heavy libraries (structlog
and rich, networkx, asyncssh, cryptography, ...) must not be imported by the paths that do not
need them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("structlog", "rich", "networkx", "asyncssh", "cryptography", "pydantic", "yaml", "asyncio")


def loaded_after(code: str) -> dict[str, bool]:
    """Which of HEAVY (and the hactl.cli.* modules) ``code`` left in sys.modules."""
    probe = (
        f"{code}\nimport sys, json\n"
        "names = "
        + repr(HEAVY)
        + " + tuple(m for m in sys.modules if m.startswith('hactl.cli.'))\n"
        "print(json.dumps({n: n in sys.modules for n in names}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    loaded: dict[str, bool] = json.loads(out.stdout.splitlines()[-1])
    return loaded


def test_importing_the_cli_imports_no_library_but_click() -> None:
    loaded = loaded_after("import hactl.cli")
    assert [name for name, yes in loaded.items() if yes] == []


def test_validate_needs_only_the_spec_libraries() -> None:
    loaded = loaded_after(
        "from hactl.cli import main\n"
        "try:\n    main(['validate', '-f', 'specs/lab.yaml'])\nexcept SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
    )
    assert {name for name, yes in loaded.items() if yes} == {
        "pydantic",
        "yaml",
        "hactl.cli.common",
        "hactl.cli.validate",
    }


def test_help_still_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "from hactl.cli import main; main(['--help'])"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    commands = out.stdout.split("Commands:")[1].split()
    for name in ("apply", "check", "graph", "lab", "plan", "show", "unlock", "validate"):
        assert name in commands


PLAN_SETUP = (
    "from hactl.spec.load import load_cluster\n"
    "from hactl.plan.synthetic import PROBED_AT, Synthetic\n"
    "from hactl.plan.planner import build_plan\n"
    "from hactl.plan import output, planfile\n"
    "from hactl.plan.graph import to_dot, to_mermaid\n"
    "cluster = load_cluster('specs/lab.yaml')\n"
)
"""Code that loads specs/lab.yaml with what building and printing a plan imports."""
EVERY_OUTPUT = (
    "output.render_text(plan); output.render_json(plan); output.render_markdown(plan)\n"
    "to_dot(plan.graph); to_mermaid(plan.graph)\n"
)
"""Code that prints ``plan`` in every format."""


def test_planning_imports_neither_structlog_nor_cryptography() -> None:
    """Build a fresh-cluster plan (every step kind that bring-up needs), print it in every
    format, save and load it: no structlog/rich (nothing is logged), and no cryptography or
    asyncssh (the steps import the PKI code when they run). networkx builds the DAG."""
    loaded = loaded_after(
        PLAN_SETUP + "plan = build_plan(cluster, Synthetic(cluster).observed(), now=PROBED_AT)\n"
        "assert len(plan.graph) > 10, len(plan.graph)\n"
        + EVERY_OUTPUT
        + "assert planfile.loads(planfile.dumps(plan)).steps() == plan.steps()\n"
    )
    assert loaded["networkx"]
    for name in ("structlog", "rich", "asyncssh", "cryptography"):
        assert not loaded[name], f"{name} was imported"


def test_a_plan_imports_only_the_step_kinds_it_uses() -> None:
    loaded = loaded_after(
        "import sys\n"
        "from hactl.spec.load import load_cluster\n"
        "from hactl.plan.synthetic import PROBED_AT, Synthetic\n"
        "from hactl.plan.planner import build_plan\n"
        "from hactl.plan import planfile\n"
        "cluster = load_cluster('specs/lab.yaml')\n"
        "converged = build_plan(cluster, Synthetic(cluster).converged().observed(), now=PROBED_AT)\n"
        "assert not converged.has_changes\n"
        "kinds = [m for m in sys.modules if m.startswith('hactl.plan.steps.')]\n"
        "assert kinds == [], kinds\n"
        "drift = Synthetic(cluster).converged().lb(config='global\\n  # edited\\n').observed()\n"
        "plan = build_plan(cluster, drift, now=PROBED_AT)\n"
        "kinds = sorted(m for m in sys.modules if m.startswith('hactl.plan.steps.'))\n"
        "assert kinds == ['hactl.plan.steps.configure_haproxy', 'hactl.plan.steps.verify'], kinds\n"
        "again = planfile.loads(planfile.dumps(plan))\n"
        "assert [s.to_data() for s in again.steps()] == [s.to_data() for s in plan.steps()]\n"
    )
    assert not loaded["structlog"]


def test_show_in_a_fresh_interpreter_loads_the_kinds_a_saved_plan_names(tmp_path: Path) -> None:
    from hactl.plan import output, planfile
    from hactl.plan.planner import build_plan
    from hactl.plan.synthetic import PROBED_AT, Synthetic
    from hactl.spec.load import load_cluster

    cluster = load_cluster(str(REPO / "specs" / "lab.yaml"))
    plan = build_plan(cluster, Synthetic(cluster).observed(), now=PROBED_AT)
    path = tmp_path / "fresh.plan.json"
    planfile.save(plan, str(path))
    out = subprocess.run(
        [sys.executable, "-c", "from hactl.cli import main; main()", "show", str(path), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == output.render_json(plan)


def test_a_plan_without_changes_never_imports_networkx() -> None:
    """The DAG is a networkx.DiGraph made when the first step is added; a no-op plan (the
    common case in a pipeline) has none, in any output format and as a saved plan."""
    loaded = loaded_after(
        PLAN_SETUP
        + "plan = build_plan(cluster, Synthetic(cluster).converged().observed(), now=PROBED_AT)\n"
        "assert not plan.has_changes and len(plan.graph) == 0 and plan.steps() == []\n"
        + EVERY_OUTPUT
        + "assert planfile.loads(planfile.dumps(plan)).steps() == []\n"
    )
    assert not loaded["networkx"]
