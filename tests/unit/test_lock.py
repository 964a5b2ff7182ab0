"""The cluster lock through FakeTransport, whose answers come from running the real lock script
with /bin/sh (real mkdir, flock, stat) in a folder per fake host."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
from lockhosts import PLACEHOLDER, Hosts

from hactl.errors import LockError, UnreachableError
from hactl.lock import ClusterLock, HostLock, LockOwner, lock_hosts, parse_output
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.transport.base import Result
from hactl.transport.fake import Call

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return load_file(ROOT / "specs" / "lab.yaml").cluster


@pytest.fixture
def hosts(tmp_path: Path, cluster: Cluster) -> Hosts:
    return Hosts(tmp_path, lock_hosts(cluster))


def make_lock(cluster: Cluster, hosts: Hosts, who: str, **owner: object) -> ClusterLock:
    base = LockOwner.new(command=f"hactl apply ({who})", **owner)  # type: ignore[arg-type]
    base = LockOwner(
        base.token, who, base.pid, base.since, base.ttl, base.plan_id, None, base.command
    )
    return ClusterLock(cluster, hosts, base, root=PLACEHOLDER, wait=5)


def test_lock_lives_on_the_etcd_members_sorted_by_name(cluster: Cluster) -> None:
    assert lock_hosts(cluster) == ["etcd01", "etcd02", "etcd03"]
    stacked = cluster.model_copy(
        update={"etcd": cluster.etcd.model_copy(update={"topology": "stacked", "members": []})}
    )
    assert lock_hosts(stacked) == ["master01", "master02", "master03"]


def _reordered(cluster: Cluster) -> Cluster:
    members = list(reversed(cluster.etcd.members))
    return cluster.model_copy(update={"etcd": cluster.etcd.model_copy(update={"members": members})})


def test_lock_hosts_do_not_depend_on_the_spec_order(cluster: Cluster) -> None:
    """L10: the same members listed in another order give the same lock hosts, same order."""
    other = _reordered(cluster)
    assert [m.name for m in other.etcd.members] == ["etcd03", "etcd02", "etcd01"]
    assert lock_hosts(other) == lock_hosts(cluster) == ["etcd01", "etcd02", "etcd03"]


async def test_specs_listing_the_members_in_other_orders_contend_for_the_same_lock(
    cluster: Cluster, hosts: Hosts
) -> None:
    """L10: bob's spec lists the members backwards; he meets alice's lock on the first host of
    the common order and takes nothing anywhere (in spec order he would first take etcd03)."""
    alice = make_lock(cluster, hosts, "alice@ops1")
    await alice.acquire()
    bob = make_lock(_reordered(cluster), hosts, "bob@ci")
    with pytest.raises(LockError, match=r"^etcd01: cluster 'lab' is locked by alice@ops1"):
        await bob.acquire()
    assert hosts.fakes["etcd03"].calls == []  # bob never touched etcd03
    assert not hosts.lock_dir("etcd03").exists()
    await alice.release()
    await bob.acquire()  # and once alice is done, bob takes the same majority
    assert bob.held_on == ["etcd01", "etcd02"]
    await bob.release()


async def test_acquire_takes_a_majority_and_release_removes_it(
    cluster: Cluster, hosts: Hosts
) -> None:
    lock = make_lock(cluster, hosts, "alice@ops1", plan_id="plan-1")
    await lock.acquire()
    assert lock.held_on == ["etcd01", "etcd02"]
    owner = hosts.owner("etcd01")
    assert owner["who"] == "alice@ops1" and owner["plan_id"] == "plan-1"
    assert owner["token"] == lock.owner.token and owner["pid"] == os.getpid()
    assert not hosts.lock_dir("etcd03").exists()
    await lock.release()
    assert lock.held_on == []
    assert not hosts.lock_dir("etcd01").exists() and not hosts.lock_dir("etcd02").exists()


async def test_a_second_apply_fails_fast_naming_the_holder(cluster: Cluster, hosts: Hosts) -> None:
    first = make_lock(cluster, hosts, "alice@ops1", plan_id="plan-1")
    await first.acquire()
    second = make_lock(cluster, hosts, "bob@ci")
    with pytest.raises(LockError) as caught:
        await second.acquire()
    text = str(caught.value)
    assert "etcd01: " in text
    assert "cluster 'lab' is locked by alice@ops1 (pid" in text and " since 20" in text
    assert "plan plan-1" in text
    assert caught.value.hint and "hactl unlock -f SPEC" in caught.value.hint
    assert second.held_on == []
    assert hosts.owner("etcd01")["who"] == "alice@ops1"  # untouched
    await first.release()


async def test_two_applies_started_together_exactly_one_wins(
    cluster: Cluster, hosts: Hosts
) -> None:
    locks = [make_lock(cluster, hosts, f"op{i}@ci") for i in range(4)]
    outcomes = await asyncio.gather(*(lk.acquire() for lk in locks), return_exceptions=True)
    winners = [lk for lk, out in zip(locks, outcomes, strict=True) if out is None]
    losers = [out for out in outcomes if isinstance(out, LockError)]
    assert len(winners) == 1 and len(losers) == 3
    assert all(winners[0].owner.who in str(err) for err in losers)


async def test_first_host_down_locks_the_next_ones_and_still_excludes_others(
    cluster: Cluster, hosts: Hosts
) -> None:
    hosts.fakes["etcd01"].fail_with = UnreachableError("connection refused", host="etcd01")
    first = make_lock(cluster, hosts, "alice@ops1")
    await first.acquire()
    assert first.held_on == ["etcd02", "etcd03"]
    # etcd01 is back (or only the first operator could not reach it): the second still loses
    hosts.fakes["etcd01"].fail_with = None
    second = make_lock(cluster, hosts, "bob@ci")
    with pytest.raises(LockError, match=r"etcd02: .*locked by alice@ops1"):
        await second.acquire()
    assert not hosts.lock_dir("etcd01").exists()  # what bob took was given back
    await first.release()


async def test_no_majority_reachable_is_refused(cluster: Cluster, hosts: Hosts) -> None:
    for name in ("etcd02", "etcd03"):
        hosts.fakes[name].fail_with = UnreachableError("no route to host", host=name)
    lock = make_lock(cluster, hosts, "alice@ops1")
    with pytest.raises(LockError, match=r"majority \(2 of 3\).*etcd02: no route to host"):
        await lock.acquire()
    assert not hosts.lock_dir("etcd01").exists()


async def test_an_expired_lock_is_taken_over_and_its_old_holder_cannot_release_it(
    cluster: Cluster, hosts: Hosts
) -> None:
    old = make_lock(cluster, hosts, "alice@ops1", ttl=60)
    await old.acquire()
    for name in old.held_on:
        hosts.age(name, 120)
    new = make_lock(cluster, hosts, "bob@ci")
    await new.acquire()
    assert hosts.owner("etcd01")["who"] == "bob@ci"
    await old.release()  # alice's late release leaves bob's lock alone
    assert hosts.owner("etcd01")["who"] == "bob@ci"
    assert hosts.owner("etcd02")["who"] == "bob@ci"
    await new.release()


async def test_an_unexpired_lock_is_not_taken_over(cluster: Cluster, hosts: Hosts) -> None:
    old = make_lock(cluster, hosts, "alice@ops1", ttl=600)
    await old.acquire()
    for name in old.held_on:
        hosts.age(name, 120)
    with pytest.raises(LockError, match="alice@ops1"):
        await make_lock(cluster, hosts, "bob@ci").acquire()
    await old.refresh()  # renewing rewrites the record: fresh mtime
    state = (await old.read())["etcd01"]
    assert isinstance(state, HostLock) and state.result == "held"
    assert state.mtime is not None and state.now - state.mtime < 60
    await old.release()


async def test_unlock_breaks_the_lock_and_says_who_held_it(cluster: Cluster, hosts: Hosts) -> None:
    held = make_lock(cluster, hosts, "alice@ops1", plan_id="plan-9")
    await held.acquire()
    hosts.fakes["etcd03"].fail_with = UnreachableError("connection refused", host="etcd03")
    report = await make_lock(cluster, hosts, "bob@ci").break_lock()
    assert isinstance(report["etcd01"], HostLock) and report["etcd01"].result == "broken"
    assert report["etcd01"].owner is not None and report["etcd01"].owner.who == "alice@ops1"
    assert report["etcd03"] == "connection refused"
    assert not hosts.lock_dir("etcd01").exists() and not hosts.lock_dir("etcd02").exists()
    hosts.fakes["etcd03"].fail_with = None
    again = await make_lock(cluster, hosts, "bob@ci").break_lock()
    assert all(isinstance(s, HostLock) and s.result == "free" for s in again.values())


async def test_context_manager_releases_even_when_the_apply_fails(
    cluster: Cluster, hosts: Hosts
) -> None:
    lock = make_lock(cluster, hosts, "alice@ops1")
    with pytest.raises(RuntimeError, match="boom"):
        async with lock:
            assert hosts.lock_dir("etcd01").exists()
            raise RuntimeError("boom")
    assert not hosts.lock_dir("etcd01").exists() and not hosts.lock_dir("etcd02").exists()


def test_parse_output_handles_a_lock_without_owner_record() -> None:
    state = parse_output("etcd01", "now 200\nmtime 100\nowner \nresult held\n")
    assert state.owner is None and state.mtime == 100 and not state.expired
    broken = parse_output("etcd01", "now 5000\nmtime 100\nowner {not json\nresult held\n")
    assert broken.owner is not None and "unreadable" in broken.owner.who and broken.expired


async def test_a_stale_lock_without_owner_record_is_taken_over(
    cluster: Cluster, hosts: Hosts
) -> None:
    """An apply that died between mkdir and writing owner.json leaves an empty lock.d."""
    hosts.lock_dir("etcd01").mkdir()
    past = hosts.lock_dir("etcd01").stat().st_mtime - 10_000
    os.utime(hosts.lock_dir("etcd01"), (past, past))
    lock = make_lock(cluster, hosts, "bob@ci")
    await lock.acquire()
    assert hosts.owner("etcd01")["who"] == "bob@ci"
    await lock.release()


async def test_the_owner_record_travels_in_the_script_not_on_stdin(
    tmp_path: Path, cluster: Cluster
) -> None:
    # A hactl killed (or a connection lost) after the script started but before stdin was sent
    # left lock.d with an empty owner.json: an "unknown owner" that `hactl unlock LOCK_ID` could
    # not match (found by tests/lab/test_faults_lab's SIGKILL walk). Here the hosts never get any
    # stdin: the record must still be whole.
    hosts = Hosts(tmp_path, lock_hosts(cluster))
    lock = make_lock(cluster, hosts, "alice")
    for name, fake in hosts.fakes.items():
        runner = hosts._runner(name)  # the real script, run by /bin/sh in the host's folder

        def no_stdin(call: Call, runner: Any = runner) -> Result:
            return runner(dataclasses.replace(call, stdin=None))

        fake.on(lambda wire: True, respond=no_stdin)  # the last rule wins
    await lock.acquire()
    assert lock.held_on
    for host in lock.held_on:
        assert hosts.owner(host)["token"] == lock.owner.token
    await lock.release()
