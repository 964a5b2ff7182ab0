"""``hactl lab …``: local test hosts (network namespaces + real sshd) for a spec. Needs root."""

from __future__ import annotations

import os
import time

import click

from hactl.cli.common import handle_errors, load_spec, spec_option


@click.group()
def lab() -> None:
    """Local test hosts: every host of a spec becomes a node on this machine (root only)."""


def _lab(spec_file: str) -> object:
    from hactl.lab import Lab

    return Lab(load_spec(spec_file))


@lab.command()
@spec_option
@handle_errors
def up(spec_file: str) -> None:
    """Create and boot every node of the spec (idempotent)."""
    from hactl.lab import Lab

    cluster = load_spec(spec_file)
    lab_ = Lab(cluster)
    started = time.monotonic()
    lab_.up()
    click.echo(f"lab {lab_.name}: {len(lab_.topo.nodes)} nodes up in {time.monotonic() - started:.1f}s")
    click.echo(f"  ssh key:     {lab_.key_file}")
    click.echo(f"  known_hosts: {lab_.known_hosts}")
    for label, wanted, have in (
        ("ssh.identityFile", cluster.ssh.identity_file, lab_.key_file),
        ("ssh.knownHostsFile", cluster.ssh.known_hosts_file, lab_.known_hosts),
    ):
        if wanted and os.path.abspath(os.path.expanduser(wanted)) != have:
            click.secho(f"warning: the spec's {label} is {wanted}, the lab wrote {have}", fg="yellow", err=True)


@lab.command()
@spec_option
@handle_errors
def down(spec_file: str) -> None:
    """Remove every node, link, namespace, mount, process and the lab's state dir."""
    from hactl.lab import Lab

    lab_ = Lab(load_spec(spec_file))
    lab_.down()
    click.echo(f"lab {lab_.name}: down")


@lab.command()
@spec_option
@handle_errors
def status(spec_file: str) -> None:
    """Each node: running/stopped, link, address, sshd, running units."""
    from hactl.lab import Lab

    rows = Lab(load_spec(spec_file)).status()
    click.echo(f"{'NODE':<16} {'STATE':<8} {'LINK':<5} {'ADDRESS':<16} {'SSHD':<5} UNITS")
    for row in rows:
        sshd = "yes" if row.sshd else "no"
        click.echo(f"{row.name:<16} {row.state:<8} {row.link:<5} {row.address:<16} {sshd:<5} {' '.join(row.units)}")


def _node_command(verb: str, doc: str) -> None:
    @lab.command(name=verb, help=doc)
    @spec_option
    @click.argument("node")
    @handle_errors
    def command(spec_file: str, node: str) -> None:
        from hactl.lab import Lab

        getattr(Lab(load_spec(spec_file)), verb)(node)
        click.echo(f"{node}: {verb} done")


_node_command("stop", "Power a node off: kill every process in it (its files stay).")
_node_command("start", "Boot a stopped node (sshd, then its enabled units).")
_node_command("partition", "Cut a node's network link.")
_node_command("heal", "Restore a node's network link.")


@lab.command()
@spec_option
@click.argument("node")
@click.argument("condition", type=click.Choice(["swap", "ip-forward", "port", "kubelet-version", "clock-skew"]))
@click.option("--port", type=int, default=2380, show_default=True, help="port: the port to take")
@click.option("--version", "version", default="1.29.0", show_default=True,
              help="kubelet-version: what `kubelet --version` answers")
@click.option("--seconds", type=int, default=120, show_default=True, help="clock-skew: the offset (may be negative)")
@click.option("--clear", "clear_", is_flag=True, help="take the condition off again")
@handle_errors
def inject(spec_file: str, node: str, condition: str, port: int, version: str, seconds: int, clear_: bool) -> None:
    """Put a host condition on a node (swap on, ip_forward off, a port taken, a wrong kubelet
    version, clock skew), or take it off with --clear (docs/lab.md)."""
    from hactl.lab import Lab

    lab_ = Lab(load_spec(spec_file))
    if clear_:
        lab_.clear(node, condition)
        click.echo(f"{node}: {condition} cleared")
        return
    all_params: dict[str, dict[str, object]] = {
        "port": {"port": port}, "kubelet-version": {"version": version}, "clock-skew": {"seconds": seconds}}
    params = all_params.get(condition, {})
    lab_.inject(node, condition, **params)
    click.echo(f"{node}: {condition} injected")
