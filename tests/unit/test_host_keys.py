"""A changed SSH host key on any spec host refuses the plan, the apply (its fresh probe, also of a
saved plan) and ``hactl check``, naming the host, its address, the offered key and what to do;
an unknown key keeps its policy (an unreachable host, refused only when a step needs it).
tests/ssh/test_host_key_refusal.py does the same against a real sshd, tests/lab/
test_host_key_lab.py on the lab."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

import hactl.apply.run as run
import hactl.probe
from hactl.check import CheckData, Finding, Report, evaluate
from hactl.cli import main
from hactl.errors import HostKeyChangedError, HostKeyError, PlanError, UnreachableError
from hactl.facts.host_keys import HOST_KEY_CHANGED, host_key_problems
from hactl.facts.model import Observed
from hactl.plan import planfile
from hactl.plan.planner import build_plan
from hactl.plan.synthetic import PROBED_AT, Synthetic
from hactl.probe import probe, unreachable
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.transport.base import Result
from hactl.transport.fake import Call, FakeTransport
from hactl.transport.ssh import SSHTarget
from hactl.transport.ssh_errors import host_key_error

SPEC = Path(__file__).resolve().parents[2] / "specs" / "lab.yaml"
OFFERED = "SHA256:Jd2Wq4bNf0mAEH8pT2hY8wY3k5m3c0F8n2zqVbq0u1s"
KNOWN = "/var/lib/hactl-lab/lab/known_hosts"


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return load_file(SPEC).cluster


def target(address: str = "198.18.0.31", port: int = 22) -> SSHTarget:
    return SSHTarget("worker01", address, port, "root", None, False, KNOWN, "strict", 5.0, None)


def changed(address: str = "198.18.0.31", port: int = 22) -> HostKeyError:
    client: Any = SimpleNamespace(problem="changed", offered=OFFERED)
    return host_key_error("worker01", target(address, port), client, "")


def unknown() -> HostKeyError:
    client: Any = SimpleNamespace(problem="unknown", offered=OFFERED)
    return host_key_error("worker01", target(), client, "")


def with_host(cluster: Cluster, observed: Observed, name: str, error: BaseException) -> Observed:
    host = next(h for h in cluster.all_hosts() if h.name == name)
    return replace(observed, hosts={**observed.hosts, name: unreachable(host, error)})


def drifted(cluster: Cluster) -> Synthetic:
    """Converged but for a hand edit of lb01's haproxy.cfg (the plan rewrites it)."""
    return Synthetic(cluster).converged().lb(config="global\n  # edited by hand\n")


def assert_names_everything(text: str) -> None:
    assert "worker01 (198.18.0.31): the SSH host key of 198.18.0.31 CHANGED" in text, text
    assert f"(offered {OFFERED})" in text and "possible man-in-the-middle attack" in text
    assert "verify the new key out of band" in text
    assert f"`ssh-keygen -R '198.18.0.31' -f {KNOWN}` (ssh.knownHostsFile)" in text


# -- the error and what the probe records --------------------------------------------------


def test_a_changed_key_is_its_own_error_with_the_way_out() -> None:
    error = changed("198.18.0.31", 2222)
    assert isinstance(error, HostKeyChangedError) and not error.transient
    assert (error.address, error.offered, error.known_hosts_file) == (
        "[198.18.0.31]:2222", OFFERED, KNOWN)
    assert f"must print {OFFERED}" in str(error)
    assert f"`ssh-keygen -R '[198.18.0.31]:2222' -f {KNOWN}`" in str(error)
    assert not isinstance(unknown(), HostKeyChangedError)  # unknown keys keep their policy


async def test_the_probe_tells_a_changed_key_from_an_unreachable_host(cluster: Cluster) -> None:
    hosts = [h for h in cluster.all_hosts() if h.name in ("worker01", "master02", "master03")]
    down = UnreachableError("connection refused by root@198.18.0.22", host="master02")
    observed = await probe(
        cluster, {"worker01": changed(), "master02": down, "master03": unknown()}, hosts=hosts)
    assert not any(observed.reachable(h.name) for h in hosts)
    assert set(observed["worker01"].section_errors) == {HOST_KEY_CHANGED}
    assert observed["master02"].section_errors == {} == observed["master03"].section_errors
    problems = host_key_problems(observed)
    assert list(problems) == ["worker01"]
    assert_names_everything(problems["worker01"])
    assert "CHANGED" in (observed["worker01"].error or "")  # still said where errors are shown


# -- plan ------------------------------------------------------------------------------------


def test_a_changed_key_on_a_host_no_step_needs_refuses_the_plan(cluster: Cluster) -> None:
    observed = with_host(cluster, drifted(cluster).observed(), "worker01", changed())
    assert len(build_plan(cluster, drifted(cluster).observed(), now=PROBED_AT).graph) > 0
    with pytest.raises(PlanError) as caught:
        build_plan(cluster, observed, now=PROBED_AT)
    text = str(caught.value)
    assert text.startswith("the plan is refused: the SSH host key of worker01 changed; hactl "
                           "plans nothing and changes no host")
    assert_names_everything(text)


def test_every_host_with_a_changed_key_is_named(cluster: Cluster) -> None:
    observed = with_host(cluster, drifted(cluster).observed(), "worker01", changed())
    address = next(str(h.address) for h in cluster.all_hosts() if h.name == "etcd02")
    observed = with_host(cluster, observed, "etcd02", changed(address))
    with pytest.raises(PlanError) as caught:
        build_plan(cluster, observed, now=PROBED_AT)
    assert "the SSH host key of etcd02, worker01 changed" in str(caught.value)
    assert f"etcd02 ({address}): the SSH host key of {address} CHANGED" in str(caught.value)


def test_an_unknown_key_keeps_its_policy(cluster: Cluster) -> None:
    """Never recorded (strict): an unreachable host, listed, the plan goes on without it."""
    observed = with_host(cluster, drifted(cluster).observed(), "worker01", unknown())
    plan = build_plan(cluster, observed, now=PROBED_AT)
    assert list(plan.unreachable) == ["worker01"] and "is not in" in plan.unreachable["worker01"]
    assert [s.id for s in plan.steps()][:1] == ["lb[lb01].haproxy"]


@pytest.mark.parametrize("flags", [[], ["--json"], ["--format", "markdown"], ["-o", "plan.json"]])
def test_hactl_plan_refuses_with_exit_1_in_every_format(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flags: list[str]
) -> None:
    async def probe_cluster(c: Cluster, **_kw: object) -> Observed:
        return with_host(c, drifted(c).observed(), "worker01", changed())

    monkeypatch.setattr(hactl.probe, "probe_cluster", probe_cluster)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["plan", "-f", str(SPEC), *flags])
    assert res.exit_code == 1, res.output
    assert res.stdout == ""  # no plan, in no format
    assert res.stderr.startswith("Error: the plan is refused: the SSH host key of worker01 changed")
    assert_names_everything(res.stderr)
    assert not (tmp_path / "plan.json").exists()


# -- check ------------------------------------------------------------------------------------


def test_check_fails_on_a_changed_key_in_the_same_words(cluster: Cluster) -> None:
    converged = Synthetic(cluster).converged().observed()
    healthy = evaluate(cluster, CheckData(converged, PROBED_AT))
    observed = with_host(cluster, converged, "worker01", changed())
    report = evaluate(cluster, CheckData(observed, PROBED_AT))
    ssh = [f for f in report.findings if f.check == "ssh"]
    assert [(f.severity, f.subject) for f in ssh] == [("error", "worker01")]
    assert ssh[0].message == host_key_problems(observed)["worker01"]
    assert not report.healthy
    assert [f for f in healthy.findings if f.check == "ssh"] == []
    text = report.render_text()
    assert "[FAIL] ssh: worker01: worker01 (198.18.0.31): the SSH host key" in text
    assert_names_everything(text)


# -- apply ------------------------------------------------------------------------------------


@dataclass
class World:
    """Fake hosts whose lock script runs under /bin/sh in a folder per host (as in
    test_apply_flow.py); the probe returns ``observed``; check is stubbed."""

    base: Path
    cluster: Cluster
    observed: Observed
    fakes: dict[str, FakeTransport] = field(default_factory=dict)
    probes: int = 0

    def locked(self) -> list[str]:
        return sorted(p.parent.name for p in self.base.glob("*/lock.d"))

    def commands(self) -> list[str]:
        """What ran on the hosts besides the lock script."""
        return [c.wire for f in self.fakes.values() for c in f.calls if "lock.mutex" not in c.wire]


def _lock_runner(folder: Path) -> Callable[[Call], Result]:
    folder.mkdir(parents=True, exist_ok=True)

    def respond(call: Call) -> Result:
        script = call.wire.replace("root=/var/lib/hactl;", f"root={folder};")
        done = subprocess.run(["/bin/sh", "-c", script], input=call.stdin or b"",
                              capture_output=True, timeout=30, check=False)
        return Result(done.returncode, done.stdout.decode(), done.stderr.decode())

    return respond


@pytest.fixture
def world(tmp_path: Path, cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> World:
    w = World(tmp_path / "hosts", cluster, drifted(cluster).observed())
    for host in cluster.all_hosts():
        fake = FakeTransport(host.name)
        fake.on(lambda wire: "lock.mutex" in wire, respond=_lock_runner(w.base / host.name))
        w.fakes[host.name] = fake

    @asynccontextmanager
    async def connections(_cluster: Cluster, _dir: str) -> AsyncIterator[Any]:
        yield (lambda name: w.fakes[name]), dict(w.fakes)

    async def fake_probe(_cluster: Cluster, _opened: object, **_kw: object) -> Observed:
        w.probes += 1
        await asyncio.sleep(0)
        return w.observed

    async def check(*_a: object, **_k: object) -> Report:
        return Report(cluster.metadata.name, (Finding("api", "ok", "k8s-api.lab:6443", "ok"),))

    monkeypatch.setattr(run, "connections", connections)
    monkeypatch.setattr(hactl.probe, "probe", fake_probe)
    monkeypatch.setattr(run, "run_check", check)
    monkeypatch.setenv("HACTL_STATE_DIR", str(tmp_path / "state"))
    return w


async def test_apply_refuses_before_any_step(world: World, tmp_path: Path) -> None:
    world.observed = with_host(world.cluster, world.observed, "worker01", changed())
    echoed: list[str] = []
    options = run.Options(cluster=world.cluster, spec_file=str(SPEC), echo=echoed.append,
                          check_settle=0)
    with pytest.raises(PlanError) as caught:
        await run.run_apply(options)
    assert_names_everything(str(caught.value))
    assert world.commands() == [] and world.locked() == []
    assert not (tmp_path / "state" / "journal").exists()  # no step ran


async def test_apply_of_a_saved_plan_refuses_on_its_fresh_probe(
    world: World, tmp_path: Path
) -> None:
    """The plan was saved before the key changed: the probe at apply time refuses it (a
    refusal, not a "stale plan" that a new plan would cure)."""
    path = tmp_path / "plan.json"
    planfile.save(build_plan(world.cluster, world.observed, now=datetime.now(UTC)), str(path))
    world.observed = with_host(world.cluster, world.observed, "worker01", changed())
    options = run.Options(plan_file=str(path), echo=lambda _line: None, check_settle=0)
    with pytest.raises(PlanError) as caught:
        await run.run_apply(options)
    assert_names_everything(str(caught.value))
    assert world.probes == 1 and world.commands() == [] and world.locked() == []
    assert not (tmp_path / "state" / "journal").exists()
