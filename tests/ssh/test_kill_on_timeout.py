"""A command that times out or whose caller is cancelled is killed on the host — its whole
process group — before hactl goes on (real sshd on 127.0.0.1, see conftest.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import pytest

from hactl.apply import Engine, RetryPolicy
from hactl.errors import CommandError
from hactl.plan.step import Step, StepContext
from hactl.sensitive import Sensitive
from hactl.transport.ssh import Connections, SSHTransport
from hactl.transport.ssh_session import MAX_OUTPUT, OutputLimitError

from .conftest import Sshd


async def _one(sshd: Sshd) -> SSHTransport:
    sshd.trust()
    cluster = sshd.cluster()
    conns = Connections(cluster)
    try:
        return await conns.connect(cluster.masters[0])
    except BaseException:
        await conns.aclose()
        raise


def _processes_with(token: str) -> list[str]:
    """Live (non-zombie) processes whose command line holds ``token``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if token in cmdline and state != "Z":
            found.append(f"{entry.name} {state} {cmdline}")
    return found


def _slow_script(tmp_path: Path, seconds: float) -> tuple[str, Path, str]:
    """A script with a child in the background and one in the foreground; both sleep, then
    the script writes a marker. The token (a unique sleep length) finds them in /proc."""
    token = f"{seconds}{secrets.randbelow(10**6):06d}"
    marker = tmp_path / "finished"
    script = f"sleep {token} & sleep {token}; echo finished > {marker}"
    return script, marker, token


async def test_a_timed_out_command_is_killed_with_its_group(sshd: Sshd, tmp_path: Path) -> None:
    script, marker, token = _slow_script(tmp_path, 2.5)
    transport = await _one(sshd)
    try:
        started = time.monotonic()
        with pytest.raises(CommandError) as info:
            await transport.run(("sh", "-c", script), timeout=0.8)
        assert time.monotonic() - started < 2.4  # not waited out
        err = info.value
        assert "killed after 0.8s" in str(err) and "confirmed gone" in str(err)
        assert err.transient  # known to be stopped: a retry cannot run alongside it
        assert _processes_with(token) == []  # checked before the kill's result came back
        await asyncio.sleep(3.0)
        assert not marker.exists()
        assert (await transport.run(("true",))).ok  # the connection is still usable
    finally:
        await transport.aclose()


async def test_a_cancelled_command_is_killed_before_the_cancel_completes(
    sshd: Sshd, tmp_path: Path
) -> None:
    script, marker, token = _slow_script(tmp_path, 2.5)
    transport = await _one(sshd)
    try:
        task = asyncio.create_task(transport.run(("sh", "-c", script), timeout=60))
        sleeps = f"sleep {token}"

        def sleeping() -> int:
            return sum(line.split(" ", 2)[2].startswith(sleeps) for line in _processes_with(token))

        deadline = time.monotonic() + 5
        while sleeping() < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        ran = sleeping()
        task.cancel()
        assert ran == 2  # both sleeps ran on the host
        with pytest.raises(asyncio.CancelledError):
            await task
        assert _processes_with(token) == []
        await asyncio.sleep(3.0)
        assert not marker.exists()
    finally:
        await transport.aclose()


async def test_a_step_timeout_around_the_command_kills_it_too(sshd: Sshd, tmp_path: Path) -> None:
    """The engine's ``asyncio.timeout(step.timeout)`` cancels the running command."""
    script, marker, token = _slow_script(tmp_path, 2.5)
    transport = await _one(sshd)
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.8):
                await transport.run(("sh", "-c", script), timeout=120)
        assert _processes_with(token) == []
        await asyncio.sleep(3.0)
        assert not marker.exists()
    finally:
        await transport.aclose()


async def test_output_past_the_cap_stops_reading_and_kills_the_command(sshd: Sshd) -> None:
    token = f"{secrets.randbelow(10**9)}"
    transport = await _one(sshd)
    try:
        with pytest.raises(OutputLimitError) as info:
            await transport.run(
                ("sh", "-c", f"yes {token}; sleep 30"), timeout=60, check=False
            )
        assert "more than 8 MiB on stdout" in str(info.value) and not info.value.transient
        assert _processes_with(token) == []
        ok = await transport.run(("head", "-c", str(MAX_OUTPUT), "/dev/zero"))
        assert len(ok.stdout) == MAX_OUTPUT  # exactly the cap is still fine
    finally:
        await transport.aclose()


async def test_the_wrapper_adds_no_process_as_root(sshd: Sshd) -> None:
    """Under OpenSSH the login shell already leads its own group: the wrapper runs the
    command in it (no setsid, no sh in between) and reports that group on stderr, which the
    caller never sees."""
    transport = await _one(sshd)
    try:
        result = await transport.run(
            'read -r p c s pp g rest < /proc/self/stat; read -r parent < "/proc/$pp/comm";'
            ' echo "$$ $p $g $parent"; echo err >&2',
            backstop=False,
        )
        shell, pid, pgid, parent = result.stdout.split()
        assert shell == pid == pgid and parent == "sshd"
        assert result.stderr == "err\n"  # the wrapper's line was taken out
    finally:
        await transport.aclose()


async def test_asyncssh_never_logs_the_wire_command(
    sshd: Sshd, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    transport = await _one(sshd)
    try:
        with caplog.at_level(logging.DEBUG):
            result = await transport.run(("printf", "%s", Sensitive("t0ken-in-the-argv")))
        assert result.stdout == "t0ken-in-the-argv"
    finally:
        await transport.aclose()
    assert "t0ken-in-the-argv" not in caplog.text
    assert logging.getLogger("asyncssh").getEffectiveLevel() >= logging.WARNING


@dataclass(frozen=True)
class _SlowStep(Step):
    """Runs the slow script with a short command timeout; records, at the start of each
    attempt, which processes of an earlier attempt still run on the host."""

    kind = "slow_test"
    script: str = ""
    token: str = ""
    seen: list[list[str]] = field(default_factory=list, compare=False, repr=False)

    async def run(self, ctx: StepContext) -> None:
        self.seen.append(_processes_with(self.token))
        assert self.host is not None
        await ctx.transport(self.host).run(("sh", "-c", self.script), timeout=0.8)


async def test_the_engine_retries_a_timed_out_step_only_after_it_stopped(
    sshd: Sshd, tmp_path: Path
) -> None:
    script, marker, token = _slow_script(tmp_path, 2.5)
    transport = await _one(sshd)
    step = _SlowStep(id="slow", host="master01", title="slow", reason="r", script=script,
                     token=token, timeout=30)  # fmt: skip
    graph: nx.DiGraph = nx.DiGraph()
    graph.add_node(step.id, step=step)
    try:
        engine = Engine(graph, cluster=sshd.cluster(), transports=lambda _h: transport,
                        retry=RetryPolicy(attempts=3, base_delay=0.0, jitter=0.0))  # fmt: skip
        result = await engine.run()
    finally:
        await transport.aclose()
    assert result.results["slow"].attempts == 3 and not result.ok
    assert "killed after 0.8s" in result.results["slow"].error
    assert step.seen == [[], [], []]  # no attempt ever ran alongside an earlier one
    assert _processes_with(token) == []
    await asyncio.sleep(3.0)
    assert not marker.exists()


async def test_the_probe_is_still_one_session_per_host(sshd: Sshd) -> None:
    """The wrapper reports the process group inline on stderr: no extra round trip."""
    from hactl.probe import probe

    sshd.trust()
    cluster = sshd.cluster()
    async with Connections(cluster) as conns:
        transports = await conns.open_all(cluster.masters)
        transport = transports["master01"]
        assert isinstance(transport, SSHTransport)
        opened: list[str] = []
        real = transport._conn.create_process

        async def counting(command: str, **kwargs: object) -> object:
            opened.append(command)
            return await real(command, **kwargs)

        transport._conn.create_process = counting
        observed = await probe(cluster, transports, hosts=cluster.masters)
    host = observed["master01"]
    assert host.reachable and host.system is not None, host
    assert len(opened) == 1  # the probe script, nothing else (no kill, no PGID query)
    assert "timeout -k" not in opened[0]  # read-only: no backstop process on the host
