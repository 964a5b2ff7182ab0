"""The lock's release tries a host that could not be reached (it may be rebooting: the SSH
transport reconnects on the next command) again before leaving the record to expire."""

from __future__ import annotations

from pathlib import Path

import pytest
from lockhosts import PLACEHOLDER, Hosts

from hactl.errors import CommandError, UnreachableError
from hactl.lock import RELEASE_TRIES, ClusterLock, LockOwner, lock_hosts
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.transport.base import Command, Result
from hactl.transport.fake import FakeTransport

ROOT = Path(__file__).resolve().parents[2]


class Flaky:
    """A lock host whose release fails ``times`` times (then runs the real script)."""

    def __init__(self, fake: FakeTransport, times: int, error: Exception) -> None:
        self.fake, self.host, self.times, self.error = fake, fake.host, times, error
        self.releases = 0

    async def run(self, command: Command, **kwargs: object) -> Result:
        if isinstance(command, str) and "op=release" in command:
            self.releases += 1
            if self.releases <= self.times:
                raise self.error
        return await self.fake.run(command, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def cluster() -> Cluster:
    return load_file(ROOT / "specs" / "lab.yaml").cluster


def _lock(cluster: Cluster, get: object) -> ClusterLock:
    lock = ClusterLock(cluster, get, LockOwner.new(), root=PLACEHOLDER, wait=5)  # type: ignore[arg-type]
    lock.release_pause = 0.01
    return lock


async def test_a_host_unreachable_at_release_is_tried_again(
    cluster: Cluster, tmp_path: Path
) -> None:
    hosts = Hosts(tmp_path, lock_hosts(cluster))
    flaky = Flaky(hosts.fakes["etcd02"], 1, UnreachableError("connection refused", host="etcd02"))
    get = {**hosts.fakes, "etcd02": flaky}.__getitem__
    lock = _lock(cluster, get)
    await lock.acquire()
    assert lock.held_on == ["etcd01", "etcd02"]
    await lock.release()
    assert flaky.releases == 2
    assert not hosts.lock_dir("etcd01").exists() and not hosts.lock_dir("etcd02").exists()


async def test_release_gives_up_after_its_tries_and_never_retries_a_permanent_error(
    cluster: Cluster, tmp_path: Path
) -> None:
    hosts = Hosts(tmp_path, lock_hosts(cluster))
    down = Flaky(hosts.fakes["etcd02"], 99, UnreachableError("no route", host="etcd02"))
    lock = _lock(cluster, {**hosts.fakes, "etcd02": down}.__getitem__)
    await lock.acquire()
    await lock.release()
    assert down.releases == RELEASE_TRIES
    assert hosts.lock_dir("etcd02").exists()  # left to expire (or `hactl unlock`)
    assert not hosts.lock_dir("etcd01").exists()

    hosts2 = Hosts(tmp_path / "b", lock_hosts(cluster))
    broken = Flaky(hosts2.fakes["etcd01"], 99, CommandError("exit 1", host="etcd01"))
    lock2 = _lock(cluster, {**hosts2.fakes, "etcd01": broken}.__getitem__)
    await lock2.acquire()
    await lock2.release()
    assert broken.releases == 1
