"""The probe against real lab nodes (network namespaces, real sshd, real etcd/haproxy/kubectl
and the lab's stand-ins): every node of specs/lab.yaml is read in one round trip over one
connection per host, an unreachable node is reported instead of aborting, and the probe
writes nothing (file trees under /etc /var /root /tmp, processes and units unchanged)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from hactl.probe import probe_cluster
from hactl.spec.load import load_cluster

SNAPSHOT = (
    "find /etc /var /root /tmp -path /var/lib/hactl-lab -prune -o "
    "-printf '%p\\t%y\\t%T@\\t%s\\t%m\\n' | LC_ALL=C sort"
)
PROCESSES = "ps -e -o pid=,args="
OWN = ("ps ", "/bin/sh -c", "sh -c", "nsenter ")
"""The snapshot's own processes (left out of the comparison)."""


def snapshot(lab: Any, names: list[str]) -> dict[str, tuple[str, str]]:
    out = {}
    for name in names:
        files = lab.run(name, SNAPSHOT, check=True, timeout=120).stdout
        procs = lab.run(name, PROCESSES, check=True).stdout.splitlines()
        mine = [p for p in procs if not p.split(None, 1)[1].startswith(OWN)]
        out[name] = (files, "\n".join(sorted(mine)))
    return out


def changes(before: str, after: str) -> list[str]:
    old, new = set(before.splitlines()), set(after.splitlines())
    return sorted({f"- {line}" for line in old - new} | {f"+ {line}" for line in new - old})


def test_probe_fresh_lab_reads_every_node_and_writes_nothing(lab_factory: Any) -> None:
    lab = lab_factory()
    cluster = load_cluster(lab.spec_file)
    names = [h.name for h in cluster.all_hosts()]
    units_before = {s.name: s.units for s in lab.status()}
    before = snapshot(lab, names)

    started = time.monotonic()
    observed = asyncio.run(probe_cluster(cluster))
    elapsed = time.monotonic() - started

    after = snapshot(lab, names)
    units_after = {s.name: s.units for s in lab.status()}
    for name in names:
        assert changes(before[name][0], after[name][0]) == [], f"{name}: the probe wrote files"
        assert changes(before[name][1], after[name][1]) == [], f"{name}: processes changed"
    assert units_before == units_after

    assert observed.unreachable() == []
    for name in names:
        facts = observed[name]
        assert facts.section_errors == {}, (name, facts.section_errors)
        assert facts.system is not None and facts.system.hostname == name
        assert facts.system.user == "root" and facts.system.init_system == "systemd"
        assert facts.binaries is not None
        assert facts.binaries.version("etcd") == "3.4.23"
        assert facts.binaries.version("etcdctl") == "3.4.23"
        assert facts.binaries.version("haproxy") == "2.6.12"
        assert facts.binaries.get("kubeadm") is not None
        assert facts.binaries.get("kubelet") is not None
        assert facts.binaries.get("kubectl") is not None
    for member in ("etcd01", "etcd02", "etcd03"):
        etcd = observed[member].etcd
        assert etcd is not None and not etcd.active and not etcd.unit_present
        assert etcd.data_dir_state in ("absent", "empty") and etcd.members is None
        assert etcd.query_error is not None
    lb = observed["lb01"].haproxy
    assert lb is not None and not lb.active and lb.servers == ()
    for node in ("master01", "master02", "master03", "worker01", "worker02"):
        k8s = observed[node].kubernetes
        assert k8s is not None and not k8s.initialised and not k8s.joined
        assert k8s.cluster is None
    assert observed.first_initialised_master(["master01", "master02", "master03"]) is None
    print(f"probe of {len(names)} nodes: {elapsed:.2f}s")
