"""``hactl validate -f SPEC``: load and validate a spec; exit 0 valid, 1 invalid."""

from __future__ import annotations

import click

from hactl.cli.common import handle_errors, spec_option


@click.command()
@spec_option
@handle_errors
def validate(spec_file: str) -> None:
    """Check a spec: every error as FILE:LINE:COL: path.to.field: message (exit 1)."""
    from hactl.spec.load import load_file

    loaded = load_file(spec_file)
    for warning in loaded.warnings:
        click.secho(str(warning), fg="yellow", err=True)
    hosts = loaded.cluster.all_hosts()
    names = ", ".join(h.name for h in hosts)
    click.echo(f"{spec_file}: valid ({len(hosts)} hosts: {names})")
