"""etcd_kv against a real TLS etcd 3.4 on loopback."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from hactl.lab.standins.etcd_kv import EtcdClient, EtcdUnavailable, prefix_end

from .conftest import Etcd


@pytest.fixture
def client_of() -> Iterator[Callable[..., EtcdClient]]:
    made: list[EtcdClient] = []

    def make(etcd: Etcd, timeout: float = 3.0) -> EtcdClient:
        p = etcd.pki
        c = EtcdClient(etcd.endpoints.split(","), cafile=str(p.etcd_ca.pair.cert),
                       certfile=str(p.etcd_client.cert), keyfile=str(p.etcd_client.key),
                       timeout=timeout)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def test_prefix_end() -> None:
    assert prefix_end("/registry/") == b"/registry0"


def test_crud_and_cas(etcd1: Etcd, client_of: Callable[..., EtcdClient]) -> None:
    c = client_of(etcd1)
    assert c.get("/t/a") is None
    rev = c.create("/t/a", b"1")
    assert rev is not None
    assert c.create("/t/a", b"2") is None  # exists
    kv = c.get("/t/a")
    assert kv is not None and kv.value == b"1" and kv.mod_revision == rev
    assert c.update("/t/a", b"3", kv.mod_revision) is not None
    assert c.update("/t/a", b"4", kv.mod_revision) is None  # stale revision
    assert c.update("/t/missing", b"x", None) is None
    c.put("/t/b", b"bee")
    kvs, header_rev = c.range_prefix("/t/")
    assert [k.key for k in kvs] == ["/t/a", "/t/b"] and header_rev >= rev
    assert c.delete_if("/t/a") and not c.delete_if("/t/a")
    assert c.delete("/t/b") == 1
    assert c.status(etcd1.members[0].endpoint)["version"].startswith("3.4.")
    lease = c.lease_grant(30)
    assert lease > 0
    c.put("/t/leased", b"x", lease=lease)
    assert c.get("/t/leased").lease == lease  # type: ignore[union-attr]


def test_unavailable(etcd1: Etcd, client_of: Callable[..., EtcdClient]) -> None:
    c = client_of(etcd1, timeout=1.0)
    etcd1.members[0].stop()
    with pytest.raises(EtcdUnavailable):
        c.get("/t/a")


def test_quorum_loss_and_failover(etcd3: Etcd, client_of: Callable[..., EtcdClient]) -> None:
    c = client_of(etcd3, timeout=1.5)
    c.put("/q", b"1")
    etcd3.members[0].stop()
    assert c.get("/q") is not None  # fails over to a live member
    etcd3.members[1].stop()
    with pytest.raises(EtcdUnavailable):
        c.get("/q")  # one of three: no quorum, linearizable read times out
    etcd3.members[1].start()
    deadline = time.monotonic() + 20
    while True:
        try:
            assert c.get("/q") is not None
            break
        except EtcdUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_watch_stream(etcd1: Etcd, client_of: Callable[..., EtcdClient]) -> None:
    from hactl.lab.standins.etcd_kv import Watch, WatchEvent

    c = client_of(etcd1)
    rev = c.put("/w/a", b"1")
    c.put("/w/a", b"2")
    c.delete("/w/a")
    c.put("/other", b"x")
    watch = Watch(c, "/w/", rev)  # replays history from rev
    try:
        events: list[WatchEvent] = []
        while len(events) < 3:
            batch = watch.next_batch()
            assert batch is not None
            events.extend(batch)
    finally:
        watch.close()
    assert [(e.type, e.kv.key, e.kv.value) for e in events] == [
        ("PUT", "/w/a", b"1"), ("PUT", "/w/a", b"2"), ("DELETE", "/w/a", b"")]
    assert events[2].prev is not None and events[2].prev.value == b"2"


def test_compaction_cancels_old_watches(etcd1: Etcd, client_of: Callable[..., EtcdClient]) -> None:
    from hactl.lab.standins.etcd_kv import EtcdError, Watch

    c = client_of(etcd1)
    old = c.put("/c/a", b"1")
    latest = c.put("/c/a", b"2")
    c.compact(latest)
    watch = Watch(c, "/c/", old)
    try:
        with pytest.raises(EtcdError) as err:
            watch.next_batch()
        assert err.value.code == 11
    finally:
        watch.close()
