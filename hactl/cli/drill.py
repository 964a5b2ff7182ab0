"""``hactl drill -f SPEC [--node NAME] [--json] [--junit FILE]``: the failover test.

Exit codes: 0 passed; 1 refused or could not start (nothing touched); 2 a fault's check failed
(every fault restored, the cluster healthy again); 3 a fault was not restored or the cluster is
not healthy after the drill; 130 interrupted (the fault in progress restored). docs/drill.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hactl.cli.common import handle_errors, load_spec, run_async, spec_option

if TYPE_CHECKING:
    from hactl.drill import DrillReport


@click.command()
@spec_option
@click.option("--node", default=None, metavar="NAME",
              help="The master whose control plane is taken out (default: the one holding "
              "the most leader Leases).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.option("--junit", "junit", default=None, type=click.Path(dir_okay=False),
              metavar="FILE", help="Also write a JUnit XML report to FILE.")
@handle_errors
def drill(spec_file: str, node: str | None, as_json: bool, junit: str | None) -> None:
    """Take out one master's control plane, then one etcd member (stacked etcd: the member of
    another master), one at a time; check the API keeps answering and writing, leadership
    moves, everything comes back. Refused on a degraded cluster or a topology with no fault
    budget."""
    cluster = load_spec(spec_file)

    async def main() -> DrillReport:
        from hactl.apply.run import connections
        from hactl.drill.run import Drill
        from hactl.journal import new_run_id

        async with connections(cluster, str(Path(spec_file).resolve().parent)) as (get, opened):
            return await Drill(cluster, get, opened, run_id=new_run_id()).run(node)

    report = run_async(main())
    if junit:
        Path(junit).write_text(report.to_junit(), encoding="utf-8")
    if as_json:
        click.echo(json.dumps(report.to_data(), indent=2, sort_keys=True))
    else:
        click.echo(report.render_text())
    sys.exit(report.exit_code)
