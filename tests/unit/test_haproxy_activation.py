"""HAProxy "written" vs "loaded": the probe's snippet in the real /bin/sh (real processes, real
file times), the diff planning a graceful reload of what is stale, and the step reloading it
and leaving hactl's marker."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from stepctx import Ctx

from hactl.diff import Op, diff
from hactl.errors import CommandError
from hactl.facts import haproxy
from hactl.facts.haproxy_loaded import _FILES
from hactl.plan import commands as cmd
from hactl.plan import desired
from hactl.plan.output import render_text
from hactl.plan.planner import build_plan
from hactl.plan.steps.configure_haproxy import ConfigureHAProxy
from hactl.plan.synthetic import PROBED_AT, Synthetic
from hactl.probe import _PREAMBLE, split_sections
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.transport.base import Result
from hactl.transport.process_group import wrap

ROOT = Path(__file__).resolve().parents[2]
MARK = "HACTL-0123456789abcdef"


@pytest.fixture(scope="module")
def lab() -> Cluster:
    return load_file(str(ROOT / "specs" / "lab.yaml")).cluster


class _Host:
    """A haproxy stand-in: a process group (master + one worker) and a config file, with a
    ``systemctl`` on PATH that names the master as MainPID."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.cfg = tmp / "haproxy.cfg"
        self.marker = tmp / "haproxy.sha256"
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.master: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """The master forks a worker (like haproxy -Ws) and waits."""
        self.master = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], start_new_session=True)
        (self.bin / "systemctl").write_text(f"#!/bin/sh\necho {self.master.pid}\n")
        (self.bin / "systemctl").chmod(0o755)
        children = Path(f"/proc/{self.master.pid}/task/{self.master.pid}/children")
        deadline = time.monotonic() + 5
        while not children.read_text().split() and time.monotonic() < deadline:
            time.sleep(0.01)

    def write(self, text: str = "global\n") -> str:
        self.cfg.write_text(text)
        return hashlib.sha256(text.encode()).hexdigest()

    def read(self) -> haproxy.HAProxyFileInfo:
        """The snippet inside the probe's own runner and transport wrapper, in real sh."""
        snippet = _FILES.format(cfg=self.cfg, marker=self.marker, active="HACTL_HAPROXY_ACTIVE")
        script = (
            _PREAMBLE.format(marker=MARK) + "HACTL_HAPROXY_ACTIVE=active\n"
            f"f() {{\n{snippet}\n}}\n__hactl_run haproxy.files f\n"
        )
        env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}"}
        out = subprocess.run(["sh", "-c", wrap(script)], capture_output=True, text=True,
                             env=env, timeout=10, check=True)  # fmt: skip
        sections = split_sections(out.stdout, out.stderr, MARK)
        assert "haproxy.files" in sections, out
        return haproxy.HAProxyFiles().parse(sections["haproxy.files"].stdout)

    def stop(self) -> None:
        if self.master is not None:
            os.killpg(self.master.pid, 9)  # the group this test started
            self.master.wait()


@pytest.fixture
def host(tmp_path: Path) -> Iterator[_Host]:
    h = _Host(tmp_path)
    yield h
    h.stop()


def test_a_file_written_before_haproxy_started_is_loaded(host: _Host) -> None:
    host.write()
    time.sleep(0.2)
    host.start()
    info = host.read()
    assert info.loaded is True and info.loaded_sha256 is None
    assert info.loaded_why == "haproxy (re)started after the file was written"


def test_a_file_written_after_the_last_load_is_not_loaded(host: _Host) -> None:
    old = host.write("old\n")
    host.start()
    host.marker.write_text(f"{old}\n")
    time.sleep(0.3)
    host.write("new\n")  # the apply died here, before `systemctl reload haproxy`
    info = host.read()
    assert info.loaded is False and info.loaded_sha256 == old
    assert "has not loaded it" in info.loaded_why


def test_hactls_marker_for_this_very_file_means_loaded(host: _Host) -> None:
    host.start()
    time.sleep(0.3)
    want = host.write()
    host.marker.write_text(f"{want}\n")
    assert host.read().loaded is True


def test_not_running_is_not_judged(host: _Host) -> None:
    host.write()
    (host.bin / "systemctl").write_text("#!/bin/sh\necho 0\n")
    (host.bin / "systemctl").chmod(0o755)
    info = host.read()
    assert info.loaded is None and info.loaded_why == ""


def _stale(lab: Cluster) -> Synthetic:
    s = Synthetic(lab).converged()
    facts = s.hosts["lb01"].haproxy
    assert facts is not None
    return s._set("lb01", haproxy=replace(facts, config_loaded=False,
                                          loaded_why="written after the last reload"))


def test_a_right_file_never_loaded_plans_a_graceful_reload(lab: Cluster) -> None:
    obs = _stale(lab).observed()
    changes = diff(lab, obs, now=PROBED_AT).effective()
    assert [(c.address, c.op) for c in changes] == [("lb[lb01].service", Op.UPDATE)]
    change = changes[0]
    assert change.before == {"active": True, "loaded": False}
    assert change.after == {"active": True, "loaded": True}
    assert change.reason == "written after the last reload; reload haproxy (graceful) to load it"
    plan = build_plan(lab, obs, now=PROBED_AT)
    steps = plan.graph.order()
    assert [type(s).__name__ for s in steps if s.host == "lb01"] == ["ConfigureHAProxy"]
    text = render_text(plan)
    assert "reload haproxy (graceful)" in text and "restart" not in text.lower()


async def test_the_step_reloads_a_stale_file_and_leaves_the_marker(lab: Cluster) -> None:
    ctx = Ctx(lab)
    fake = ctx.transport("lb01")
    want = hashlib.sha256(desired.haproxy_cfg(lab).encode()).hexdigest()
    fake.on(("sha256sum",), stdout=f"{want}  {cmd.HAPROXY_CFG}\n")
    fake.on(("systemctl", "is-active"), stdout="active\n")
    fake.on(lambda wire: "config_mtime=" in wire, stdout=(
        f"config_sha256={want}  -\nloaded_sha256={'0' * 64}\nconfig_mtime=1010.5\n"
        "started=1000\nnow=2000.0\nuptime=1000.0\n"))  # fmt: skip
    fake.on(("systemctl", "reload"))

    await ConfigureHAProxy(id="s", host="lb01", title="t", reason="r").run(ctx)
    argvs = ctx.argvs("lb01")
    assert ("systemctl", "reload", "haproxy") in argvs
    assert not any(a[0] == "mv" or "restart" in a for a in argvs)
    assert fake.files[haproxy.LOADED_MARKER] == (f"{want}\n".encode(), 0o644)


async def test_the_step_leaves_a_loaded_file_alone(lab: Cluster) -> None:
    ctx = Ctx(lab)
    fake = ctx.transport("lb01")
    want = hashlib.sha256(desired.haproxy_cfg(lab).encode()).hexdigest()
    fake.on(("sha256sum",), stdout=f"{want}  {cmd.HAPROXY_CFG}\n")
    fake.on(("systemctl", "is-active"), stdout="active\n")
    fake.on(lambda wire: "config_mtime=" in wire,
            stdout=f"config_sha256={want}  -\nloaded_sha256={want}\n")  # fmt: skip

    await ConfigureHAProxy(id="s", host="lb01", title="t", reason="r").run(ctx)
    assert not any(a[:2] == ("systemctl", "reload") for a in ctx.argvs("lb01"))
    assert fake.files == {}


async def test_the_step_waits_out_reloading_after_the_reload(lab: Cluster) -> None:
    # haproxy -Ws under Type=notify sends RELOADING=1, then READY=1 once the new workers run:
    # systemd shows the unit as "reloading" in between, which is not a failure.
    ctx = Ctx(lab)
    fake = ctx.transport("lb01")
    fake.on(("sha256sum",), stdout=f"{'0' * 64}  {cmd.HAPROXY_CFG}\n")
    states = iter(["active\n", "reloading\n", "reloading\n", "active\n"])
    fake.on(("systemctl", "is-active"), respond=lambda _call: Result(0, next(states), ""))
    for argv in (("haproxy",), ("mv",), ("systemctl", "reload")):
        fake.on(argv)
    await ConfigureHAProxy(id="s", host="lb01", title="t", reason="r").run(ctx)
    assert len([a for a in ctx.argvs("lb01") if a[:2] == ("systemctl", "is-active")]) == 4
    assert haproxy.LOADED_MARKER in fake.files
    # a state other than active or reloading fails at once
    ctx = Ctx(lab)
    fake = ctx.transport("lb01")
    fake.on(("sha256sum",), stdout=f"{'0' * 64}  {cmd.HAPROXY_CFG}\n")
    states = iter(["active\n", "failed\n"])
    fake.on(("systemctl", "is-active"), respond=lambda _call: Result(0, next(states), ""))
    for argv in (("haproxy",), ("mv",), ("systemctl", "reload")):
        fake.on(argv)
    with pytest.raises(CommandError, match="haproxy is failed after the change"):
        await ConfigureHAProxy(id="s", host="lb01", title="t", reason="r").run(ctx)
    assert haproxy.LOADED_MARKER not in fake.files
