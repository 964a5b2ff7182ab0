"""M1: `hactl unlock -f SPEC [LOCK_ID] [--force]` (Terraform's `force-unlock LOCK_ID`): shows the
holder, needs the lock id, keeps a lock renewed within its TTL unless forced, and calls a lock
whose holder process on this machine is gone stale, with the evidence. The lock hosts run the
real lock script under /bin/sh (tests/unit/lockhosts.py)."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from lockhosts import Hosts

import hactl.apply.run as run
from hactl.cli import main
from hactl.errors import LockError
from hactl.lock import LOCK_ROOT, ClusterLock, LockOwner, lock_hosts
from hactl.lock_owner import boot_id, process_start
from hactl.spec.load import load_file
from hactl.spec.models import Cluster

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "specs" / "lab.yaml"


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return load_file(SPEC).cluster


@pytest.fixture
def hosts(tmp_path: Path, cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Hosts:
    found = Hosts(tmp_path, lock_hosts(cluster), root=LOCK_ROOT)

    @asynccontextmanager
    async def connections(_cluster: Cluster, _dir: str) -> AsyncIterator[Any]:
        yield found, dict(found.fakes)

    monkeypatch.setattr(run, "connections", connections)
    return found


def owner(ttl: float = 900.0, **fields: Any) -> LockOwner:
    base = LockOwner.new(command="hactl apply -f lab.yaml", ttl=ttl)
    values = {**base.__dict__, "who": "alice@ops1", **fields}
    return LockOwner(**values)


def hold(cluster: Cluster, hosts: Hosts, who: LockOwner) -> ClusterLock:
    """Take the lock as ``who`` (the CLI runs its own event loop, so these tests are sync)."""
    lock = ClusterLock(cluster, hosts, who)
    asyncio.run(lock.acquire())
    return lock


def unlock(*args: str) -> Result:
    return CliRunner().invoke(main, ["unlock", "-f", str(SPEC), *args])


def dead_pid() -> int:
    child = subprocess.Popen(["/bin/true"])
    child.wait()
    return child.pid


def test_without_a_lock_id_unlock_shows_the_holder_and_removes_nothing(
    cluster: Cluster, hosts: Hosts
) -> None:
    held = hold(cluster, hosts, owner())
    res = unlock()
    assert res.exit_code == 1, res.output
    # one group when both hosts' records read the same; two when their "last renewed Ns ago"
    # differ by a second (the two hosts are written one after the other: seen in CI under load)
    assert re.search(r"the cluster lock is held \(etcd01(, etcd02)?: alice@ops1 \(pid", res.output), res.output
    assert ("etcd01, etcd02: alice@ops1 (pid" in res.output
            or "; etcd02: alice@ops1 (pid" in res.output), res.output
    assert f"lock id {held.owner.lock_id}" in res.output
    assert re.search(r"last renewed \ds ago \(within its TTL of 900s\)", res.output)
    assert "nothing was removed" in res.output
    assert f"hactl unlock -f SPEC {held.owner.lock_id}" in res.output
    assert hosts.lock_dir("etcd01").exists() and hosts.lock_dir("etcd02").exists()


def test_a_live_lock_is_kept_unless_forced(cluster: Cluster, hosts: Hosts) -> None:
    held = hold(cluster, hosts, owner())
    res = unlock(held.owner.lock_id)
    assert res.exit_code == 1
    assert re.search(rf"lock {held.owner.lock_id} was renewed \ds ago, within its TTL", res.output)
    assert f"hactl unlock -f SPEC {held.owner.lock_id} --force" in res.output
    assert hosts.owner("etcd01")["who"] == "alice@ops1"
    res = unlock(held.owner.lock_id, "--force")
    assert res.exit_code == 0, res.output
    assert "etcd01: removed the lock held by alice@ops1" in res.output
    assert "etcd03: no lock" in res.output
    assert "Lock broken (was held by alice@ops1" in res.output
    assert not hosts.lock_dir("etcd01").exists() and not hosts.lock_dir("etcd02").exists()
    again = unlock()
    assert again.exit_code == 0 and "No lock is held." in again.output


def test_another_lock_id_removes_nothing(cluster: Cluster, hosts: Hosts) -> None:
    held = hold(cluster, hosts, owner(ttl=60))
    for name in held.held_on:
        hosts.age(name, 120)  # expired: but it is not the lock the operator named
    res = unlock("deadbeefdeadbeef", "--force")
    assert res.exit_code == 1
    assert "no lock with id deadbeefdeadbeef is held" in res.output
    assert hosts.lock_dir("etcd01").exists()
    res = unlock("not-an-id")
    assert res.exit_code == 2 and "is not a lock id" in res.output


def test_an_expired_lock_is_removed_with_its_id(cluster: Cluster, hosts: Hosts) -> None:
    held = hold(cluster, hosts, owner(ttl=60))
    for name in held.held_on:
        hosts.age(name, 120)
    res = unlock(held.owner.lock_id)
    assert res.exit_code == 0, res.output
    assert "(expired of 60s)" in res.output and "Lock broken" in res.output
    assert not hosts.lock_dir("etcd01").exists()


def test_a_lock_whose_local_holder_process_is_gone_is_called_stale(
    cluster: Cluster, hosts: Hosts
) -> None:
    """A CI job killed mid-apply on this machine: same host name and boot, its pid is gone."""
    pid = dead_pid()
    gone = owner(pid=pid, hostname=socket.gethostname(), boot_id=boot_id(), pid_start="1")
    held = hold(cluster, hosts, gone)
    evidence = f"its process (pid {pid}) no longer runs on this machine"
    with pytest.raises(LockError) as caught:
        asyncio.run(ClusterLock(cluster, hosts, owner(who="bob@ci")).acquire())
    assert "STALE: " + evidence in str(caught.value)
    assert caught.value.hint is not None
    assert caught.value.hint.startswith(
        f"its holder is gone: run `hactl unlock -f SPEC {held.owner.lock_id}`"
    )
    res = unlock(held.owner.lock_id)  # within its TTL, yet removed without --force: proven dead
    assert res.exit_code == 0, res.output
    assert f"etcd01: removed the lock held by alice@ops1 (pid {pid})" in res.output
    assert "STALE: " + evidence in res.output  # unlock says why
    assert not hosts.lock_dir("etcd01").exists()


def test_plain_unlock_removes_a_lock_whose_local_holder_is_proven_gone(
    cluster: Cluster, hosts: Hosts
) -> None:
    """The CI case: the job that held the lock was killed; `hactl unlock -f SPEC` shows the
    evidence and removes that lock (only that one: compared against the id it read)."""
    pid = dead_pid()
    hold(cluster, hosts, owner(pid=pid, hostname=socket.gethostname(), boot_id=boot_id()))
    res = unlock()
    assert res.exit_code == 0, res.output
    assert f"STALE: its process (pid {pid}) no longer runs on this machine" in res.output
    assert "Lock broken" in res.output and not hosts.lock_dir("etcd01").exists()
    # a live local holder is not removed that way
    hold(cluster, hosts, owner())
    assert unlock().exit_code == 1 and hosts.lock_dir("etcd01").exists()


def test_only_a_holder_on_this_machine_in_this_boot_is_judged() -> None:
    pid = dead_pid()
    here, boot = socket.gethostname(), boot_id()
    assert owner(pid=pid, hostname=here, boot_id=boot).gone() is not None
    assert owner(pid=pid, hostname="elsewhere", boot_id=boot).gone() is None
    assert owner(pid=pid, hostname=here, boot_id="another-boot").gone() is None
    assert owner(pid=pid, hostname=here, boot_id="").gone() is None  # an old record: no claim
    me = owner(pid=os.getpid(), hostname=here, boot_id=boot, pid_start=process_start(os.getpid()))
    assert me.gone() is None  # alive
    reused = owner(pid=os.getpid(), hostname=here, boot_id=boot, pid_start="12345")
    assert reused.gone() is not None and "now another process" in str(reused.gone())


def test_a_new_owner_records_what_proves_it_gone_later() -> None:
    new = LockOwner.new()
    assert new.hostname == socket.gethostname() and new.boot_id == boot_id()
    assert new.pid_start == process_start(os.getpid()) != ""
    assert LockOwner.from_json(new.to_json()) == new
    assert len(new.lock_id) == 16 and new.token.startswith(new.lock_id)
