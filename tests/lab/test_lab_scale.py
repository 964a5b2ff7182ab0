"""A 50-node lab comes up in seconds, every sshd answers, and it goes down without a trace."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest


def spec(workers: int) -> dict[str, Any]:
    return {
        "apiVersion": "hactl.dev/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": "scale"},
        "controlPlaneEndpoint": "k8s-api.lab:6443",
        "kubernetes": {"version": "1.30.4"},
        "loadBalancer": {"dnsName": "k8s-api.lab", "hosts": [{"name": "lb01", "address": "198.18.0.10"}]},
        "masters": [{"name": f"master{i:02d}", "address": f"198.18.0.{10 + i}"} for i in (1, 2, 3)],
        "workers": [{"name": f"worker{i:03d}", "address": f"198.18.0.{100 + i}"} for i in range(workers)],
        "lab": {"subnet": "198.18.0.0/24"},
    }


@pytest.mark.slow
def test_fifty_nodes_up_and_down(lab_factory: Any, lab_leftovers: Any) -> None:
    started = time.monotonic()
    lab = lab_factory(spec(46))
    took = time.monotonic() - started
    assert len(lab.topo.nodes) == 50
    rows = lab.status()
    nodes = {h.name for h in (*lab.cluster.masters, *lab.cluster.workers)}

    def units(name: str) -> set[str]:  # prepared hosts: masters and workers run containerd too
        return {"ssh.service", "containerd.service"} if name in nodes else {"ssh.service"}

    # sshd runs first; containerd may still be starting (tests/lab/test_lab_inject.py checks it)
    assert all(r.state == "running" and r.sshd and "ssh.service" in r.units
               and set(r.units) <= units(r.name) for r in rows), rows

    def hostname(name: str) -> str:
        return str(lab.run(name, "hostname", via="ssh").stdout.strip())

    with ThreadPoolExecutor(max_workers=16) as pool:
        assert list(pool.map(hostname, [n.name for n in lab.topo.nodes])) == [n.name for n in lab.topo.nodes]
    lab.down()
    assert lab_leftovers(lab) == []
    assert took < 120, f"50 nodes took {took:.1f}s to come up"
