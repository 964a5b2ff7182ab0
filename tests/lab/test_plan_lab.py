"""`hactl plan` against real lab nodes: a fresh lab lists the full bring-up; a hand-made
haproxy.cfg matching the render shows no LB change; a hand edit shows exactly that drift.
(Converging with apply and "a second plan shows no changes" are covered by the apply tests.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from hactl.cli import main
from hactl.plan import desired
from hactl.spec.load import load_file

FULL_BRING_UP = [
    "pki.etcd-ca", "pki.etcd[etcd01]", "pki.etcd[etcd02]", "pki.etcd[etcd03]",
    "etcd.member[etcd01].bootstrap", "etcd.member[etcd02].bootstrap",
    "etcd.member[etcd03].bootstrap", "etcd.health", "lb[lb01].haproxy",
    "master[master01].etcd-client-certs", "master[master01].init", "network.install",
    "master[master02].join", "master[master03].join",
    "worker[worker01].join", "worker[worker02].join", "network.wait", "cluster.verify",
]


def plan_json(spec_file: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["plan", "-f", spec_file, "--json"])
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_fresh_lab_plans_the_full_bring_up_then_shows_lb_drift(lab_factory: Any, tmp_path: Path) -> None:
    lab = lab_factory()
    runner = CliRunner()

    result = runner.invoke(main, ["plan", "-f", lab.spec_file, "--detailed-exitcode",
                                  "-o", str(tmp_path / "fresh.plan")])
    assert result.exit_code == 2, result.output
    assert result.stdout.rstrip("\n").splitlines()[-1] == "Plan: 13 to add, 1 to change, 0 to remove.", result.stdout
    assert (tmp_path / "fresh.plan").stat().st_mode & 0o777 == 0o600
    shown = runner.invoke(main, ["show", str(tmp_path / "fresh.plan")])
    assert shown.exit_code == 0 and shown.stdout == result.stdout

    doc = plan_json(lab.spec_file)
    assert [s["id"] for s in doc["steps"]] == FULL_BRING_UP
    assert doc["unreachable"] == {}
    assert set(doc["fingerprint"]) == {h.name for h in lab.cluster.all_hosts()}

    # the rendered haproxy.cfg placed by hand: no config change for lb01 any more
    cluster = load_file(lab.spec_file).cluster
    rendered = desired.haproxy_cfg(cluster)
    done = lab.run("lb01", "mkdir -p /etc/haproxy && cat > /etc/haproxy/haproxy.cfg", input=rendered)
    assert done.returncode == 0, done.stderr
    addresses = [c["address"] for c in plan_json(lab.spec_file)["changes"]]
    assert "lb[lb01].haproxy_cfg" not in addresses

    # a hand edit is exactly that drift
    edited = rendered.replace("timeout client 35s", "timeout client 5s")
    assert lab.run("lb01", "cat > /etc/haproxy/haproxy.cfg", input=edited).returncode == 0
    result = runner.invoke(main, ["plan", "-f", lab.spec_file])
    assert result.exit_code == 0, result.output
    assert "~ lb[lb01].haproxy_cfg" in result.stdout
    assert "-    timeout client 5s" in result.stdout and "+    timeout client 35s" in result.stdout

    graph = runner.invoke(main, ["graph", "-f", lab.spec_file, "--format", "mermaid"])
    assert graph.exit_code == 0 and graph.stdout.startswith("flowchart LR")

    # a host the bring-up needs does not answer: the plan is refused and names it
    lab.partition("worker02")
    try:
        result = runner.invoke(main, ["plan", "-f", lab.spec_file])
    finally:
        lab.heal("worker02")
    assert result.exit_code == 1
    assert "worker02: unreachable" in result.output
    assert "needed because it is a worker whose Node is not registered" in result.output


class _Ctx:
    """The smallest StepContext: one shared SSH connection per host (the engine's job in apply)."""

    def __init__(self, cluster: Any, opened: Any) -> None:
        from hactl.plan.step import RunSecrets

        self.cluster, self.opened, self.secrets = cluster, opened, RunSecrets()
        self.events: list[tuple[str, dict[str, object]]] = []

    def transport(self, host: str) -> Any:
        found = self.opened[host]
        if isinstance(found, BaseException):
            raise found
        return found

    def log(self, event: str, **fields: object) -> None:
        self.events.append((event, fields))


async def _plan_and_run_etcd_steps(spec_file: str) -> list[str]:
    """Probe, plan, and run the plan's PKI and etcd steps in order; return their ids."""
    from hactl.plan.planner import build_plan
    from hactl.probe import probe
    from hactl.transport.ssh import Connections

    cluster = load_file(spec_file).cluster
    async with Connections(cluster, spec_dir=str(Path(spec_file).parent)) as conns:
        opened = await conns.open_all()
        observed = await probe(cluster, opened)
        plan = build_plan(cluster, observed, now=observed.probed_at)
        ctx = _Ctx(cluster, opened)
        done = []
        for step in plan.steps():
            if step.id.startswith(("pki.", "etcd.")):
                await step.run(ctx)  # type: ignore[arg-type]
                done.append(step.id)
        return done


async def _etcd_changes(spec_file: str) -> list[str]:
    from hactl.diff import diff
    from hactl.probe import probe_cluster

    cluster = load_file(spec_file).cluster
    observed = await probe_cluster(cluster, spec_dir=str(Path(spec_file).parent))
    return [c.address for c in diff(cluster, observed, now=observed.probed_at).effective()
            if c.address.startswith(("pki.", "etcd."))]


async def test_etcd_bootstrap_then_failed_member_replaced_on_real_etcd(lab_factory: Any) -> None:
    lab = lab_factory()
    done = await _plan_and_run_etcd_steps(lab.spec_file)
    assert done == FULL_BRING_UP[:8]
    assert await _etcd_changes(lab.spec_file) == []
    members = lab.run("etcd01", "etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/etcd/pki/ca.crt "
                      "--cert=/etc/etcd/pki/healthcheck-client.crt --key=/etc/etcd/pki/healthcheck-client.key "
                      "member list")
    assert members.returncode == 0 and members.stdout.count("started") == 3, members.stdout

    # etcd03 loses its disk: the plan replaces it (remove first), one change at a time
    lab.run("etcd03", "systemctl stop etcd; rm -rf /var/lib/etcd/member", check=True)
    assert await _etcd_changes(lab.spec_file) == ["etcd.member[etcd03]"]
    done = await _plan_and_run_etcd_steps(lab.spec_file)
    assert done == ["etcd.member[etcd03].remove", "etcd.member[etcd03].add",
                    "etcd.member[etcd03].start", "etcd.member[etcd03].promote", "etcd.health"]
    assert await _etcd_changes(lab.spec_file) == []
