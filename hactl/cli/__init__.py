"""hactl's command line: thin. Parse arguments, call the library, map errors to exit codes.

Subcommands are imported when used: ``hactl validate`` does not import what ``apply`` needs.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from hactl import __version__


class LazyGroup(click.Group):
    """A click group whose subcommands live in modules imported on first use (``--help`` imports
    them all to list them)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, tuple[str, str]] = {}

    def add_lazy_commands(self, module: str, **commands: str) -> None:
        """``add_lazy_commands("hactl.cli.plan", plan="plan_cmd")``: the command ``plan`` is
        ``hactl.cli.plan.plan_cmd``."""
        for name, attribute in commands.items():
            self.lazy[name] = (module, attribute)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module, attribute = self.lazy[cmd_name]
            command = getattr(importlib.import_module(module), attribute)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands and args[0] not in self.lazy:
            for name in self.lazy:  # an unknown name: "did you mean" considers every command
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


# --- subcommands: name=attribute of a module under hactl/cli/, imported when used (one line each)
main.add_lazy_commands("hactl.cli.validate", validate="validate")
main.add_lazy_commands("hactl.cli.lab", lab="lab")
main.add_lazy_commands("hactl.cli.plan", plan="plan_cmd", show="show_cmd", graph="graph_cmd")
main.add_lazy_commands("hactl.cli.apply", apply="apply", check="check", unlock="unlock")
main.add_lazy_commands("hactl.cli.drill", drill="drill")
# --- end of subcommands --------------------------------------------------------------------
