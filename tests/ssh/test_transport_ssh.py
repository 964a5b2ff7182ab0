"""SSHTransport and Connections against a real sshd on 127.0.0.1 (see conftest.py)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hactl.errors import AuthError, CommandError, HostKeyError, UnreachableError
from hactl.probe import probe
from hactl.sensitive import Sensitive
from hactl.transport.base import Transport
from hactl.transport.ssh import Connections, SSHTransport

from .conftest import Sshd, free_port, keygen


async def _one(sshd: Sshd, **ssh: object) -> SSHTransport:
    cluster = sshd.cluster(ssh=dict(ssh))
    conns = Connections(cluster)
    try:
        return await conns.connect(cluster.masters[0])
    except BaseException:
        await conns.aclose()
        raise


async def test_known_key_connects_runs_and_reuses_one_connection(sshd: Sshd) -> None:
    sshd.trust()
    cluster = sshd.cluster()
    async with Connections(cluster) as conns:
        transport = await conns.connect(cluster.masters[0])
        assert isinstance(transport, Transport)
        result = await transport.run(("echo", "hello world"))
        assert (result.exit_status, result.stdout) == (0, "hello world\n")
        script = await transport.run("printf '%s' \"$(id -un)\"; echo err >&2; exit 4", check=False)
        assert (script.exit_status, script.stdout, script.stderr) == (4, "root", "err\n")
        fed = await transport.run(("cat",), stdin=b"\x00\x01binary")
        assert fed.stdout == "\x00\x01binary"
        assert await conns.connect(cluster.masters[0]) is transport  # reused


async def test_unknown_key_is_refused_under_strict_with_the_way_out(sshd: Sshd) -> None:
    sshd.known_hosts.write_text("")
    with pytest.raises(HostKeyError) as info:
        await _one(sshd)
    text = str(info.value)
    assert info.value.host == "master01"
    assert f"ssh-keyscan -H -p {sshd.port} 127.0.0.1 >> {sshd.known_hosts}" in text
    assert "hostKeyPolicy: accept-new" in text
    assert not info.value.transient
    assert sshd.known_hosts.read_text() == ""


async def test_accept_new_records_the_key_then_strict_accepts_it(sshd: Sshd) -> None:
    assert not sshd.known_hosts.exists()
    transport = await _one(sshd, hostKeyPolicy="accept-new")
    await transport.aclose()
    recorded = sshd.known_hosts.read_text()
    assert recorded == sshd.known_line()
    transport = await _one(sshd)  # strict now finds it
    assert (await transport.run(("true",))).ok
    await transport.aclose()
    assert sshd.known_hosts.read_text() == recorded  # nothing appended twice


@pytest.mark.parametrize("policy", ["strict", "accept-new"])
async def test_changed_key_is_always_refused(sshd: Sshd, tmp_path: Path, policy: str) -> None:
    other = keygen(tmp_path / f"other_{policy}")
    line = f"[127.0.0.1]:{sshd.port} {' '.join(other.split()[:2])}\n"
    sshd.known_hosts.write_text(line)
    with pytest.raises(HostKeyError) as info:
        await _one(sshd, hostKeyPolicy=policy)
    assert "possible man-in-the-middle" in str(info.value)
    assert "ssh-keygen -R" in str(info.value)
    assert sshd.known_hosts.read_text() == line


async def test_auth_refused_names_the_key_and_what_to_check(sshd: Sshd, tmp_path: Path) -> None:
    sshd.trust()
    stranger = tmp_path / "stranger"
    keygen(stranger)
    with pytest.raises(AuthError) as info:
        await _one(sshd, identityFile=str(stranger))
    assert str(stranger) in str(info.value) and "authorized_keys" in str(info.value)
    assert not info.value.transient


async def test_connection_refused_is_transient_unreachable(sshd: Sshd) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(UnreachableError) as info:
        await _one(sshd, port=port)
    assert "connection refused" in str(info.value) and info.value.transient
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts TCP connections and never says a word (a hung sshd / black-holed banner)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def loop() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()


async def test_connect_timeout_maps_to_unreachable(sshd: Sshd, silent_server: int) -> None:
    started = time.monotonic()
    with pytest.raises(UnreachableError) as info:
        await _one(sshd, port=silent_server, connectTimeout=0.5)
    assert time.monotonic() - started < 5
    assert "within 0.5s" in str(info.value) and info.value.transient


async def test_command_timeout_is_a_transient_command_error(sshd: Sshd) -> None:
    sshd.trust()
    transport = await _one(sshd)
    try:
        with pytest.raises(CommandError) as info:
            await transport.run(("sleep", "5"), timeout=0.3)
        assert info.value.transient and "did not finish within 0.3s" in str(info.value)
    finally:
        await transport.aclose()


async def test_secrets_reach_the_wire_but_not_the_error(sshd: Sshd) -> None:
    sshd.trust()
    transport = await _one(sshd)
    try:
        ok = await transport.run(("printf", "%s", Sensitive("t0ken-s3cret")))
        assert ok.stdout == "t0ken-s3cret"  # revealed on the wire
        with pytest.raises(CommandError) as info:
            await transport.run(
                ("sh", "-c", 'echo "bad $0" >&2; exit 3', Sensitive("t0ken-s3cret"))
            )
        err = info.value
        assert err.exit_status == 3
        for text in (str(err), err.stderr, " ".join(err.argv)):
            assert "t0ken-s3cret" not in text
        assert "(sensitive value)" in str(err)
    finally:
        await transport.aclose()


async def test_channels_are_bounded_below_max_sessions(sshd_factory: Callable[..., Sshd]) -> None:
    server = sshd_factory(max_sessions=10)
    server.trust()
    transport = await _one(server)
    try:
        started = time.monotonic()
        results = await asyncio.gather(*(transport.run(("sleep", "0.2")) for _ in range(16)))
        elapsed = time.monotonic() - started
        assert all(r.ok for r in results)
        assert transport.max_in_flight == 8
        assert elapsed >= 0.39  # 16 sessions, 8 at a time: two waves of 0.2 s
    finally:
        await transport.aclose()


async def test_put_writes_atomically_with_mode(sshd: Sshd, tmp_path: Path) -> None:
    sshd.trust()
    transport = await _one(sshd)
    target = tmp_path / "out" / "file.conf"
    try:
        await transport.put(str(target), b"a=1\n", 0o640)
    finally:
        await transport.aclose()
    assert target.read_bytes() == b"a=1\n"
    assert target.stat().st_mode & 0o777 == 0o640
    assert not list(target.parent.glob("*.hactl-tmp*"))


async def test_bastion_jump_connection(sshd: Sshd) -> None:
    sshd.trust()
    cluster = sshd.cluster(2, ssh={"bastion": f"root@127.0.0.1:{sshd.port}"})
    async with Connections(cluster) as conns:
        transports = await conns.open_all(cluster.masters)
        assert len(conns._jumps) == 1  # one jump connection shared by both hosts
        for name in ("master01", "master02"):
            transport = transports[name]
            assert isinstance(transport, SSHTransport)
            assert (await transport.run(("echo", name))).stdout == f"{name}\n"


async def test_open_all_and_probe_report_unreachable_hosts_without_aborting(sshd: Sshd) -> None:
    sshd.trust()
    dead = free_port()
    cluster = sshd.cluster(
        2, extra=[{"name": "master03", "address": "127.0.0.1", "ssh": {"port": dead}}]
    )
    async with Connections(cluster) as conns:
        transports = await conns.open_all()
        assert isinstance(transports["master03"], UnreachableError)
        observed = await probe(cluster, transports)
    assert observed.unreachable() == ["master03"]
    assert "connection refused" in (observed["master03"].error or "")
    good = observed["master01"]
    assert good.reachable and good.system is not None
    assert good.system.hostname == socket.gethostname()
    assert good.binaries is not None  # a master: its roles' binaries only, not etcd
    assert set(good.binaries.found) == {"kubeadm", "kubelet", "kubectl"}
    kubectl = good.binaries.get("kubectl")  # this machine's, and no kubelet.conf: version read
    assert kubectl is not None and kubectl.version is not None and kubectl.version.startswith("1.")
    assert good.kubernetes is not None and good.kubernetes.cluster is None
    assert good.haproxy is None  # lb01 is the load balancer, master01 is not
    assert observed["lb01"].haproxy is not None


async def test_concurrent_connects_to_one_host_share_one_connection(sshd: Sshd) -> None:
    sshd.trust()
    cluster = sshd.cluster()
    async with Connections(cluster) as conns:
        first, second = await asyncio.gather(
            conns.connect(cluster.masters[0]), conns.connect(cluster.masters[0])
        )
        assert first is second


async def test_the_hinted_ssh_keyscan_line_is_accepted_under_strict(sshd: Sshd) -> None:
    """The hint's own command (hashed known_hosts entry from the real ssh-keyscan) works."""
    scan = subprocess.run(
        ["ssh-keyscan", "-H", "-t", "ed25519", "-p", str(sshd.port), "127.0.0.1"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert scan.stdout.startswith("|1|")
    sshd.known_hosts.write_text(scan.stdout)
    transport = await _one(sshd)
    try:
        assert (await transport.run(("true",))).ok
    finally:
        await transport.aclose()
