"""Three stand-in apiservers on one 3-member etcd, as on three masters: one store, one truth."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hactl.lab.standins.kubeapi import ApiError, Client, ns_path

from .conftest import Apiserver, Component, Etcd, wait_for

LEASES = "coordination.k8s.io/v1"


@pytest.fixture
def three(apiserver3: Apiserver, etcd3: Etcd, tmp_path: Path) -> Iterator[list[Apiserver]]:
    extra: list[Apiserver] = []
    try:
        for _ in range(2):  # each picks its free port while the ones before it already listen
            extra.append(Apiserver(apiserver3.pki, etcd3, tmp_path))
            extra[-1].start()
        yield [apiserver3, *extra]
    finally:
        for api in extra:
            api.stop()


def acquired_by(kcm: Component, identity: str) -> None:
    """A controller-manager logs its acquisition just after its lease update, which the test
    may read first: wait for the line before counting it (or killing that process)."""
    wait_for(lambda: "successfully acquired lease" in kcm.log.read_text(), 30,
             f"{identity} to log that it acquired the lease")


def test_shared_state_and_cross_server_conflicts(three: list[Apiserver],
                                                 components: Callable[..., Component]) -> None:
    clients = [Client.from_kubeconfig(str(a.admin_conf)) for a in three]
    # each client talks to its own server (one shared admin.conf once pointed all three at the
    # last one started, and reading through it after that server was stopped was refused)
    assert [c.port for c in clients] == [a.port for a in three]
    assert len({a.port for a in three}) == 3
    try:
        a, b, c = clients
        a.create(ns_path("configmaps", "default"), {"metadata": {"name": "x"}, "data": {"v": "1"}})
        seen = b.get(ns_path("configmaps", "default", "x"))
        assert seen["data"] == {"v": "1"}
        seen["data"] = {"v": "2"}
        c.update(ns_path("configmaps", "default", "x"), dict(seen))
        with pytest.raises(ApiError) as err:  # b's copy is stale now, whichever server it asks
            a.update(ns_path("configmaps", "default", "x"), seen)
        assert err.value.code == 409
        # controller-managers talking to different apiservers still elect exactly one leader
        pki = three[0].pki
        fast = ("--leader-elect-lease-duration=6s", "--leader-elect-renew-deadline=4s",
                "--leader-elect-retry-period=1s")
        kcms = [components("kube_controller_manager",
                           pki.kubeconfig(f"kcm{i}", api.url, pki.kcm), *fast,
                           "--controllers=-nodelifecycle")
                for i, api in enumerate(three)]

        via = [a]  # the apiserver the test reads through (must be one that stays up)

        def holder() -> str:
            lease = via[0].find(ns_path("leases", "kube-system", "kube-controller-manager",
                                        LEASES))
            return str((lease or {}).get("spec", {}).get("holderIdentity") or "")

        wait_for(lambda: holder() != "" and all(k.identity for k in kcms), 90, "a leader")
        first = holder()
        leader = next(k for k in kcms if k.identity == first)
        acquired_by(leader, first)
        # power off the leader's "master": its apiserver and its controller-manager
        down = kcms.index(leader)
        via[0] = clients[(down + 1) % 3]
        leader.stop(signal.SIGKILL)
        three[down].stop()
        wait_for(lambda: holder() not in ("", first), 90, "a new leader")
        second = holder()
        assert second in {k.identity for k in kcms if k is not leader}
        acquired_by(next(k for k in kcms if k.identity == second), second)
        acquired = sum("successfully acquired lease" in k.log.read_text() for k in kcms)
        assert acquired >= 2
    finally:
        for client in clients:
            client.close()
