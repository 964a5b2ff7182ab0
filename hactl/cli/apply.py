"""``hactl apply``, ``hactl check`` and ``hactl unlock``.

    hactl apply -f SPEC [--auto-approve] [--parallelism N]   probe, plan, ask, converge + check
    hactl apply PLANFILE [--parallelism N]                    apply a saved plan (refused if stale)
    hactl check -f SPEC [--json]                              health report; exit 0 healthy, 1 not
    hactl unlock -f SPEC [LOCK_ID] [--force]                  show / remove the cluster lock

Every apply holds the cluster lock (hactl.lock) from before its last probe until the end (an
approval prompt is answered before the lock is taken), writes a journal (hactl.journal) and ends
with ``hactl check``: the plan's last step (Verify) is that check, and its report is printed
once. Progress: a live view on a TTY, plain lines otherwise; structured events go to stderr
through structlog.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hactl.cli.common import handle_errors, load_spec, run_async, spec_option
from hactl.errors import HactlError

if TYPE_CHECKING:
    from hactl.apply import Reporter, StepResult
    from hactl.check import Report
    from hactl.plan.step import Step

# -- progress ---------------------------------------------------------------------------------


def _label(step: Step) -> str:
    return f"{step.host or 'cluster'}: {step.title}"


class PlainReporter:
    """One line per event (pipelines, logs, non-TTY)."""

    def __init__(self, echo: Callable[[str], None] = click.echo) -> None:
        self.echo = echo

    def started(self, step: Step, attempt: int) -> None:
        suffix = f" (attempt {attempt})" if attempt > 1 else ""
        self.echo(f"{_label(step)}: started{suffix}")

    def retrying(self, step: Step, attempt: int, delay: float, error: str) -> None:
        first = error.splitlines()[0] if error else ""
        self.echo(f"{_label(step)}: attempt {attempt} failed ({first}); retrying in {delay:.1f}s")

    def still_running(self, step: Step, elapsed: float) -> None:
        self.echo(f"{_label(step)}: still running ({elapsed:.0f}s)")

    def finished(self, result: StepResult) -> None:
        step = result.step
        if result.outcome == "ok":
            self.echo(f"{_label(step)}: done in {result.duration:.1f}s")
        elif result.outcome == "skipped":
            self.echo(
                f"{_label(step)}: skipped (a step before it failed: {result.skipped_because})"
            )
        else:
            first = result.error.splitlines()[0] if result.error else ""
            self.echo(f"{_label(step)}: FAILED after {result.duration:.1f}s: {first}")


class LiveReporter(PlainReporter):
    """A rich live view: finished steps scroll above, running ones (with elapsed) below."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console()
        super().__init__(self._print)
        self.running: dict[str, tuple[Step, float]] = {}
        self._mutex = threading.Lock()  # rich refreshes from its own thread
        self.live = Live(
            console=self.console,
            refresh_per_second=4,
            transient=True,
            get_renderable=self._render,
        )

    def _print(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def _render(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        table = Table.grid(padding=(0, 2))
        now = time.monotonic()
        with self._mutex:
            running = list(self.running.values())
        for step, since in running:
            table.add_row(Text("running", style="cyan"), Text(_label(step)), f"{now - since:.0f}s")
        return table

    def __enter__(self) -> LiveReporter:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)

    def started(self, step: Step, attempt: int) -> None:
        with self._mutex:
            self.running[step.id] = (step, time.monotonic())
        if attempt > 1:
            super().started(step, attempt)

    def still_running(self, step: Step, elapsed: float) -> None:
        pass  # the live view shows the elapsed time of every running step

    def finished(self, result: StepResult) -> None:
        with self._mutex:
            self.running.pop(result.step.id, None)
        super().finished(result)


# -- check --------------------------------------------------------------------------------------


@click.command()
@spec_option
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@handle_errors
def check(spec_file: str, as_json: bool) -> None:
    """Health of the running control plane: exit 0 healthy, 1 not (with what to do next)."""
    cluster = load_spec(spec_file)

    async def main() -> Report:
        from hactl.apply.run import connections
        from hactl.check import run_check

        async with connections(cluster, str(Path(spec_file).resolve().parent)) as (get, opened):
            return await run_check(cluster, get, opened)

    report = run_async(main())
    if as_json:
        click.echo(json.dumps(report.to_data(), indent=2, sort_keys=True))
    else:
        click.echo(report.render_text())
    sys.exit(0 if report.healthy else 1)


# -- unlock -------------------------------------------------------------------------------------


@click.command()
@spec_option
@click.argument("lock_id", required=False)
@click.option(
    "--force",
    is_flag=True,
    help="Also remove a lock renewed within its TTL (its holder may still run!); "
    "without LOCK_ID: whatever lock is held.",
)
@handle_errors
def unlock(spec_file: str, lock_id: str | None, force: bool) -> None:
    """Show who holds the cluster lock; with its LOCK_ID, remove it (after a crashed apply).

    Like Terraform's `force-unlock LOCK_ID`: without LOCK_ID (and without --force) nothing is
    removed. A lock renewed within its TTL is kept unless --force, or unless its holder is
    provably gone (a process on this machine, same boot, that no longer exists)."""
    from hactl.lock import LOCK_ID_RE, ClusterLock, HostLock, decide_unlock

    if lock_id is not None and not LOCK_ID_RE.fullmatch(lock_id):
        raise click.BadParameter(
            f"{lock_id!r} is not a lock id (8 to 32 lowercase hex digits, as printed by "
            "`hactl unlock -f SPEC`)",
            param_hint="LOCK_ID",
        )
    cluster = load_spec(spec_file)

    async def main() -> tuple[dict[str, HostLock | str], dict[str, HostLock | str]]:
        from hactl.apply.run import connections

        async with connections(cluster, str(Path(spec_file).resolve().parent)) as (get, _):
            lock = ClusterLock(cluster, get)
            seen = await lock.read()
            held = {h: s for h, s in seen.items() if isinstance(s, HostLock) and s.result != "free"}
            if not held:
                return seen, {}
            return seen, await lock.break_lock(decide_unlock(held, lock_id, force))

    seen, broken = run_async(main())
    failed: list[str] = []
    holders: set[str] = set()
    for host in sorted(seen):
        state = broken.get(host, seen[host])
        if isinstance(state, str):
            failed.append(host)
            verb = "could not remove the lock" if host in broken else "could not reach it"
            click.secho(f"{host}: {verb}: {state}", fg="red", err=True)
        elif state.result == "broken":
            holders.add(state.owner.describe() if state.owner else "an unknown owner")
            click.echo(f"{host}: removed the lock held by {state.describe()}")
        elif state.result == "free":
            click.echo(f"{host}: no lock")
        else:
            failed.append(host)
            click.secho(f"{host}: kept the lock of {state.describe()} (it changed hands)", err=True)
    if holders:
        click.echo(f"Lock broken (was held by {'; '.join(sorted(holders))}).")
    elif not broken and not failed:
        click.echo("No lock is held.")
    if failed:
        raise HactlError(
            f"the lock may remain on {', '.join(failed)}",
            hint="run `hactl unlock -f SPEC` again once they are reachable (an apply needs only "
            "a majority)",
        )


# -- apply --------------------------------------------------------------------------------------


def _confirm(auto_approve: bool, saved: bool) -> None:
    if auto_approve or saved:
        return
    if not sys.stdin.isatty():
        raise HactlError(
            "hactl apply asks for confirmation but stdin is not a terminal",
            hint="pass --auto-approve, or save a plan with `hactl plan -f SPEC -o FILE` "
            "and apply it with `hactl apply FILE`",
        )
    answer = click.prompt(
        "\nDo you want to perform these actions?\n  Only 'yes' will be accepted to approve.\n\n"
        "  Enter a value",
        default="",
        show_default=False,
    )
    if answer.strip() != "yes":
        raise HactlError("Apply cancelled.")


@click.command()
@click.argument("plan_file", required=False, type=click.Path(dir_okay=False))
@click.option(
    "-f", "--file", "spec_file", type=click.Path(dir_okay=False), help="The cluster spec (YAML)."
)
@click.option("--auto-approve", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--parallelism",
    type=click.IntRange(1, 1000),
    default=None,
    help="Steps that run at once (default: the spec's apply.parallelism).",
)
@handle_errors
def apply(
    plan_file: str | None, spec_file: str | None, auto_approve: bool, parallelism: int | None
) -> None:
    """Converge the hosts to the spec (-f SPEC), or apply a saved plan (PLAN_FILE)."""
    from hactl.apply.run import Options, run_apply

    if (plan_file is None) == (spec_file is None):
        raise click.UsageError("give either -f SPEC or a saved PLAN_FILE (not both)")
    if spec_file is not None and not auto_approve and not sys.stdin.isatty():
        _confirm(auto_approve, False)  # refuses before connecting to anything
    live = sys.stdout.isatty()

    def reporter() -> AbstractContextManager[Reporter]:
        return LiveReporter() if live else nullcontext(PlainReporter())

    options = Options(
        cluster=load_spec(spec_file) if spec_file else None,
        spec_file=spec_file,
        plan_file=plan_file,
        parallelism=parallelism,
        confirm=None if auto_approve or plan_file else lambda: _confirm(False, False),
        echo=click.echo,
        colour=live,
        reporter=reporter,
    )
    run_async(run_apply(options))
