"""``hactl plan``, ``hactl show`` and ``hactl graph``.

    hactl plan -f SPEC [-o FILE] [--json] [--format text|json|markdown] [--detailed-exitcode]
    hactl show FILE [--json]
    hactl graph -f SPEC [--format dot|mermaid]

Exit codes: 0 success (with --detailed-exitcode: 0 no changes, 2 changes), 1 error.
"""

from __future__ import annotations

import os
import sys

import click

from hactl.cli.common import handle_errors, load_spec, run_async, spec_option


def _emit(plan: object, fmt: str) -> None:
    from hactl.plan import output
    from hactl.plan.planner import Plan

    assert isinstance(plan, Plan)
    if fmt == "json":
        click.echo(output.render_json(plan), nl=False)
    elif fmt == "markdown":
        click.echo(output.render_markdown(plan), nl=False)
    else:
        click.echo(output.render_text(plan, colour=sys.stdout.isatty()), nl=False)


@click.command("plan")
@spec_option
@click.option("-o", "--out", "out_file", type=click.Path(dir_okay=False),
              help="Save the plan (mode 0600, no secrets) for `hactl apply FILE`; plans/ is the usual folder.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout (docs/plan-format.md).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default=None,
              help="Output format (default text); markdown suits a pull-request comment.")
@click.option("--detailed-exitcode", is_flag=True,
              help="Exit 0 when nothing changes, 2 when the plan has changes, 1 on errors.")
@click.option("--parallelism", type=click.IntRange(1, 1000), default=None,
              help="Accepted for symmetry with apply (planning itself does no host I/O beyond the probe).")
@handle_errors
def plan_cmd(spec_file: str, out_file: str | None, as_json: bool, fmt: str | None,
             detailed_exitcode: bool, parallelism: int | None) -> None:
    """Probe the hosts, compare them with the spec, and print what apply would do."""
    from hactl.plan import planfile
    from hactl.plan.live import make_plan

    cluster = load_spec(spec_file)
    plan = run_async(make_plan(cluster, spec_dir=os.path.dirname(os.path.abspath(spec_file))))
    if out_file:
        planfile.save(plan, out_file)
    _emit(plan, "json" if as_json else (fmt or "text"))
    if out_file and not as_json and fmt in (None, "text"):
        click.echo(f"\nSaved the plan to {out_file}; apply it with: hactl apply {out_file}", err=True)
    if detailed_exitcode and plan.has_changes:
        sys.exit(2)


@click.command("show")
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="The plan as one JSON document.")
@handle_errors
def show_cmd(plan_file: str, as_json: bool) -> None:
    """Print a saved plan."""
    from hactl.plan import planfile

    _emit(planfile.load(plan_file), "json" if as_json else "text")


@click.command("graph")
@spec_option
@click.option("--format", "fmt", type=click.Choice(["dot", "mermaid"]), default="dot", show_default=True)
@handle_errors
def graph_cmd(spec_file: str, fmt: str) -> None:
    """Print the plan's DAG (Graphviz dot or Mermaid)."""
    from hactl.plan.graph import to_dot, to_mermaid
    from hactl.plan.live import make_plan

    cluster = load_spec(spec_file)
    plan = run_async(make_plan(cluster, spec_dir=os.path.dirname(os.path.abspath(spec_file))))
    if fmt == "mermaid":
        click.echo(to_mermaid(plan.graph), nl=False)
    else:
        click.echo(to_dot(plan.graph, cluster.metadata.name), nl=False)
