"""hactl's command line: thin. Parse arguments, call the library, map errors to exit codes."""

from __future__ import annotations

import click

from hactl import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hactl")
@click.option(
    "--log-format",
    type=click.Choice(["auto", "console", "json"]),
    default="auto",
    show_default=True,
    help="Log format on stderr: console on a TTY, JSON lines otherwise (auto).",
)
@click.option("-v", "--verbose", count=True, help="More log detail (-v info, -vv debug).")
@click.pass_context
def main(ctx: click.Context, log_format: str, verbose: int) -> None:
    """Keep a highly-available kubeadm control plane in the state a YAML spec describes.

    \b
    Typical use:
      hactl validate -f cluster.yaml      check the spec
      hactl plan -f cluster.yaml          what would change on the live hosts
      hactl apply -f cluster.yaml         converge the hosts
      hactl check -f cluster.yaml         health of the running cluster
    """
    from hactl.log import configure_logging

    configure_logging(log_format, verbose)
    ctx.ensure_object(dict)


# --- subcommands: each module under hactl/cli/ adds its commands here (one line each) -------
from hactl.cli import validate as _validate  # noqa: E402

_validate.register(main)
from hactl.cli import lab as _lab; _lab.register(main)  # noqa: E402, E702, I001
from hactl.cli import plan as _plan; _plan.register(main)  # noqa: E402, E702, I001
from hactl.cli import apply as _apply; _apply.register(main)  # noqa: E402, E702, I001
# --- end of subcommands --------------------------------------------------------------------
