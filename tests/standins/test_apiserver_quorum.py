"""With etcd quorum lost the stand-in API fails (like the real one); it recovers with quorum."""

from __future__ import annotations

import time

from .conftest import Apiserver, Etcd, wait_for


def test_quorum_loss_fails_readyz_and_kubectl(apiserver3: Apiserver, etcd3: Etcd) -> None:
    api = apiserver3
    assert api.kubectl("get", "ns", "-o", "name").returncode == 0
    etcd3.members[0].stop()
    # one member down: still a quorum, still ready
    wait_for(lambda: api.get("/readyz")[0] == 200, 15, "readyz with 2 of 3 members")
    assert "namespace/kube-system" in api.kubectl("get", "ns", "-o", "name").stdout
    etcd3.members[1].stop()
    start = time.monotonic()
    code, text = api.get("/readyz?verbose", timeout=15)
    assert code == 500, text
    assert "[-]etcd failed: reason withheld" in text and text.rstrip().endswith(
        "readyz check failed")
    assert time.monotonic() - start < 10  # a quick, bounded etcd probe
    assert api.get("/livez", timeout=15)[0] == 500
    res = api.kubectl("get", "nodes", check=False)
    assert res.returncode != 0 and "Error from server" in res.stderr
    etcd3.members[1].start()
    wait_for(lambda: api.get("/readyz")[0] == 200, 30, "readyz after quorum is back")
    assert api.kubectl("get", "ns", "-o", "name").returncode == 0


def test_etcd_down_at_start_then_up(apiserver: Apiserver, etcd1: Etcd) -> None:
    etcd1.members[0].stop()
    apiserver.stop()
    apiserver.start()  # listens even though etcd is down
    assert apiserver.get("/readyz")[0] == 500
    etcd1.members[0].start()
    wait_for(lambda: apiserver.get("/readyz")[0] == 200, 30, "readyz once etcd is up")
    assert "kube-system" in apiserver.kubectl("get", "ns").stdout
