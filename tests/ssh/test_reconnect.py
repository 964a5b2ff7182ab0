"""A closed SSH connection is opened again by the next command (real sshd on 127.0.0.1).

"Reboot": the sshd this test started is killed by its PID together with every process below
it (its connections' processes and the commands they run), then started again on the same
port (same host key, or a new one). "Dropped connection": only the connection's sshd
processes are killed; the command they ran keeps running, as on a host that stays up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import pytest

from hactl.apply import Engine, RetryPolicy
from hactl.errors import HostKeyError, TransportError, UnreachableError
from hactl.lock import ClusterLock
from hactl.plan.step import Step, StepContext
from hactl.probe import probe
from hactl.transport.ssh import MAX_CHANNELS, Connections, SSHTransport

from .conftest import SSHD, Sshd, _wait_listening, keygen


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _below(pid: int) -> list[int]:
    """``pid`` and every process below it (taken before anything is killed)."""
    tree, out, todo = _children(), [], [pid]
    while todo:
        out.append(current := todo.pop())
        todo.extend(tree.get(current, []))
    return out


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in {"Z", "X"}


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in {"Z", "X"}:
            return True
    return False


def _running(token: str) -> bool:
    """A ``sleep TOKEN`` runs (the wrapper printed its first line before it ran the command)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _alive(int(entry.name)):
            try:
                if (entry / "cmdline").read_bytes() == f"sleep\0{token}\0".encode():
                    return True
            except OSError:
                continue
    return False


async def _started(token: str) -> None:
    """Until ``sleep TOKEN`` runs, and a little longer (the wrapper's first line, naming the
    process group, printed before, is on its way to hactl)."""
    for _ in range(400):
        if _running(token):
            await asyncio.sleep(0.3)
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"no process with {token} started")


def _holding(token: str) -> list[int]:
    """Live processes whose argv contains ``token`` (a number only this test uses)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid() and _alive(int(entry.name)):
            try:
                if token.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class Server:
    """The sshd of this test: killed and started again (always by the PIDs it started)."""

    sshd: Sshd
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.procs[-1].pid if self.procs else self.sshd.pid

    def stop(self, *, commands_too: bool = True) -> list[int]:
        """Kill sshd and its connections; with ``commands_too`` also what they run (a power
        off). Returns the PIDs that were killed."""
        pids = _below(self.pid)
        victims = pids if commands_too else [p for p in pids if _comm(p) == "sshd"]
        _kill(victims)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in victims):  # a zombie holds no socket: the port is free
            assert time.monotonic() < deadline, f"still alive after SIGKILL: {victims}"
            time.sleep(0.01)
        for proc in self.procs:
            if proc.pid in victims:
                proc.wait(timeout=10)
        return victims

    def start(self) -> None:
        with open(self.sshd.dir / "sshd.log", "ab") as log:
            proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.sshd.dir / "sshd_config")],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.procs.append(proc)
        _wait_listening(self.sshd.port, proc)

    def reboot(self, *, new_host_key: bool = False) -> None:
        self.stop()
        if new_host_key:
            key = self.sshd.dir / "host_ed25519"
            key.unlink()
            key.with_suffix(".pub").unlink()
            keygen(key)
        self.start()


@pytest.fixture
def server(sshd: Sshd) -> Iterator[Server]:
    sshd.trust()
    srv = Server(sshd)
    try:
        yield srv
    finally:
        for proc in srv.procs:  # the ones this test started (the fixture kills the first)
            for pid in _below(proc.pid):
                if pid != proc.pid and _comm(pid) == "sshd":
                    _kill([pid])
            proc.kill()
            proc.wait(timeout=10)


async def _transport(conns: Connections, sshd: Sshd) -> SSHTransport:
    return await conns.connect(sshd.cluster().masters[0])


async def test_the_next_command_reconnects_after_the_host_rebooted(server: Server) -> None:
    cluster = server.sshd.cluster()
    async with Connections(cluster) as conns:
        transport = await conns.connect(cluster.masters[0])
        assert (await transport.run(("echo", "before"))).stdout == "before\n"
        first = transport._conn
        server.reboot()
        await asyncio.wait_for(first.wait_closed(), 10)  # asyncssh saw the connection end
        result = await transport.run(("echo", "after"))
        assert result.stdout == "after\n"
        assert transport.reconnects == 1 and transport._conn is not first
        assert (await transport.run(("true",))).ok
        assert transport.reconnects == 1  # the new connection is reused


async def test_a_host_still_down_is_unreachable_then_reconnects_once_back(server: Server) -> None:
    cluster = server.sshd.cluster()
    async with Connections(cluster) as conns:
        transport = await conns.connect(cluster.masters[0])
        first = transport._conn
        server.stop()
        await asyncio.wait_for(first.wait_closed(), 10)
        with pytest.raises(UnreachableError) as info:
            await transport.run(("true",))
        assert info.value.transient and "connection refused" in str(info.value)
        assert info.value.host == "master01"
        server.start()
        assert (await transport.run(("echo", "back"))).stdout == "back\n"
        assert transport.reconnects == 1


async def test_a_changed_host_key_on_reconnect_is_refused_every_time(server: Server) -> None:
    cluster = server.sshd.cluster()
    known = server.sshd.known_hosts.read_text()
    async with Connections(cluster) as conns:
        transport = await conns.connect(cluster.masters[0])
        first = transport._conn
        server.reboot(new_host_key=True)
        await asyncio.wait_for(first.wait_closed(), 10)
        for _ in range(2):  # a retry gets the same answer: never relaxed
            with pytest.raises(HostKeyError) as info:
                await transport.run(("true",))
            assert not info.value.transient
            assert "CHANGED" in str(info.value) and "man-in-the-middle" in str(info.value)
    assert server.sshd.known_hosts.read_text() == known  # nothing recorded


async def test_accept_new_does_not_record_a_changed_key_on_reconnect(server: Server) -> None:
    cluster = server.sshd.cluster(ssh={"hostKeyPolicy": "accept-new"})
    known = server.sshd.known_hosts.read_text()
    async with Connections(cluster) as conns:
        transport = await conns.connect(cluster.masters[0])
        first = transport._conn
        server.reboot(new_host_key=True)
        await asyncio.wait_for(first.wait_closed(), 10)
        with pytest.raises(HostKeyError, match="CHANGED"):
            await transport.run(("true",))
    assert server.sshd.known_hosts.read_text() == known


async def test_a_command_in_flight_is_not_sent_again_and_is_stopped_before_the_next(
    server: Server, tmp_path: Path
) -> None:
    """The connection dies while a command runs and the host stays up (its command goes on):
    the transport raises (transient: the step's retry decides) without sending it again, and
    the next command on the host first kills what is left of it, over the new connection."""
    cluster = server.sshd.cluster()
    marker = tmp_path / "starts"
    token = f"3{secrets.randbelow(10**6):06d}"
    script = f"echo start >> {marker}; sleep {token}; echo end >> {marker}"
    async with Connections(cluster) as conns:
        transport = await conns.connect(cluster.masters[0])
        running = asyncio.create_task(transport.run(("sh", "-c", script), timeout=600))
        await _started(token)
        killed = server.stop(commands_too=False)
        assert killed and all(_comm(p) in {"sshd", ""} for p in killed)
        with pytest.raises(UnreachableError) as info:
            await running
        assert info.value.transient
        assert "was lost while `sh -c" in str(info.value)
        [lost] = transport.lost
        assert _group_alive(lost.pgid)  # the command survived the connection
        server.start()
        assert (await transport.run(("echo", "next"))).stdout == "next\n"
        assert transport.lost == [] and transport.reconnects == 1
        assert not _group_alive(lost.pgid)
    assert marker.read_text() == "start\n"  # sent once, and never finished


async def test_a_lost_command_of_a_rebooted_host_is_not_looked_for_by_number(
    server: Server,
) -> None:
    """After a reboot the lost command's group number may belong to a new process: the start
    time tells them apart, and nothing is killed."""
    cluster = server.sshd.cluster()
    async with Connections(cluster) as conns:
        transport = await conns.connect(cluster.masters[0])
        token = f"3{secrets.randbelow(10**6):06d}"
        running = asyncio.create_task(transport.run(("sleep", token), timeout=600))
        await _started(token)
        server.reboot()
        with pytest.raises(UnreachableError):
            await running
        [lost] = transport.lost
        # a process that now leads a group of that number (here: the same number, another start)
        stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
        try:
            transport.lost[0] = type(lost)(lost.shown, stranger.pid, lost.start)
            assert (await transport.run(("true",))).ok
            assert _alive(stranger.pid)  # not ours: left alone
            assert transport.lost == []
        finally:
            stranger.kill()
            stranger.wait(timeout=10)


async def test_concurrent_commands_after_a_reboot_share_one_reconnect(server: Server) -> None:
    cluster = server.sshd.cluster()
    async with Connections(cluster) as conns:
        transport = await conns.connect(cluster.masters[0])
        first = transport._conn
        server.reboot()
        await asyncio.wait_for(first.wait_closed(), 10)
        results = await asyncio.gather(*(transport.run(("echo", str(i))) for i in range(20)))
        assert [r.stdout for r in results] == [f"{i}\n" for i in range(20)]
        assert transport.reconnects == 1
        assert transport.max_in_flight <= MAX_CHANNELS


async def test_the_lock_is_released_and_the_probe_reads_the_host_after_a_reboot(
    server: Server, tmp_path: Path
) -> None:
    cluster = server.sshd.cluster()
    root = tmp_path / "lockroot"
    async with Connections(cluster) as conns:
        opened = await conns.open_all(cluster.masters)
        transport = opened["master01"]
        assert isinstance(transport, SSHTransport)
        lock = ClusterLock(cluster, lambda _h: transport, root=str(root), hosts=["master01"])
        await lock.acquire()
        assert (root / "lock.d" / "owner.json").exists()
        first = transport._conn
        server.reboot()
        await asyncio.wait_for(first.wait_closed(), 10)
        observed = await probe(cluster, opened, hosts=cluster.masters)
        assert observed["master01"].reachable, observed["master01"].error
        await lock.release()
    assert not (root / "lock.d").exists()


@dataclass(frozen=True)
class _CountingStep(Step):
    """Appends a line to ``marker``; the first attempt then sleeps (the host reboots then)."""

    kind = "reconnect_test"
    marker: str = ""
    token: str = ""

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        script = (
            f"echo x >> {self.marker}; [ $(wc -l < {self.marker}) -gt 1 ] || sleep {self.token}"
        )
        await ctx.transport(self.host).run(("sh", "-c", script), timeout=60)


async def test_the_engine_retries_a_step_after_the_host_rebooted(
    server: Server, tmp_path: Path
) -> None:
    marker = tmp_path / "attempts"
    cluster = server.sshd.cluster()
    async with Connections(cluster) as conns:
        transport = await conns.connect(cluster.masters[0])
        token = f"3{secrets.randbelow(10**6):06d}"
        step = _CountingStep(id="s", host="master01", title="s", reason="r", marker=str(marker),
                             token=token, timeout=60)  # fmt: skip
        graph: nx.DiGraph = nx.DiGraph()
        graph.add_node(step.id, step=step)
        engine = Engine(graph, cluster=cluster, transports=lambda _h: transport,
                        retry=RetryPolicy(attempts=3, base_delay=0.2, jitter=0.0))  # fmt: skip

        async def reboot_once_running() -> None:
            await _started(token)
            server.reboot()

        rebooting = asyncio.create_task(reboot_once_running())
        try:
            result = await engine.run()
            await rebooting
        finally:
            left = _holding(token)  # the "power-off" must have ended the first attempt
            _kill(left)  # by PID, only processes whose argv holds this test's token
    assert not left, f"the first attempt outlived the reboot: {left}"
    assert result.ok, result.results["s"].error
    assert result.results["s"].attempts == 2  # the step's retry, not the transport, re-ran it
    assert marker.read_text() == "x\nx\n"
    assert transport.reconnects == 1


async def test_without_a_way_to_reopen_a_closed_connection_is_unreachable(server: Server) -> None:
    cluster = server.sshd.cluster()
    async with Connections(cluster) as conns:
        opened = await conns.connect(cluster.masters[0])
        bare = SSHTransport("master01", opened._conn, "root")
        server.reboot()
        await asyncio.wait_for(bare._conn.wait_closed(), 10)
        with pytest.raises(TransportError, match="closed"):
            await bare.run(("true",))


async def test_commands_waiting_on_a_failed_reconnect_share_its_error(server: Server) -> None:
    """While the host is down, commands queued behind one reconnect attempt get its answer
    instead of each trying (and waiting out a connect timeout) in turn."""
    cluster = server.sshd.cluster()
    async with Connections(cluster) as conns:
        transport = await conns.connect(cluster.masters[0])
        first = transport._conn
        server.stop()
        await asyncio.wait_for(first.wait_closed(), 10)
        reopen, tries = transport._reopen, []
        assert reopen is not None

        async def counted() -> object:
            tries.append(1)
            return await reopen()

        transport._reopen = counted
        outcomes = await asyncio.gather(
            *(transport.run(("true",)) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(o, UnreachableError) for o in outcomes), outcomes
        assert len(tries) == 1
        server.start()
        assert (await transport.run(("true",))).ok and len(tries) == 2
