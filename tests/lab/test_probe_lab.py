"""The probe against real lab nodes (network namespaces, real sshd, real etcd/haproxy/kubectl
and the lab's stand-ins): every node of specs/lab.yaml is read in one round trip over one
connection per host, an unreachable node is reported instead of aborting, and the probe
writes nothing (file trees under /etc /var /root /tmp, processes and units unchanged)."""

from __future__ import annotations

import asyncio
import json
import shlex
import time
from typing import Any

from hactl.facts.binaries import binaries_for
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


def runtime_up(lab: Any, cluster: Any) -> None:
    """A booted host: the masters' and workers' containerd answers on its socket (it creates its
    state under /var/lib/containerd while it starts, which is not the probe's doing)."""
    deadline = time.monotonic() + 60
    for host in (*cluster.masters, *cluster.workers):
        while lab.run(host.name, "ctr --address /run/containerd/containerd.sock version",
                      timeout=30).returncode != 0:
            assert time.monotonic() < deadline, f"{host.name}: containerd never answered"
            time.sleep(0.5)


def _fresh_lab_probe(lab: Any, cluster: Any) -> None:
    """Every node read on a fresh lab (nothing installed or running), nothing written."""
    names = [h.name for h in cluster.all_hosts()]
    runtime_up(lab, cluster)
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
        bins = facts.binaries
        assert bins is not None
        roles = cluster.roles(name)
        assert set(bins.found) == set(binaries_for(roles)), name  # only its roles' binaries
        if "etcd" in roles:
            assert bins.version("etcd") == bins.version("etcdctl") == "3.4.23"
        if "lb" in roles:
            assert bins.version("haproxy") == "2.6.12"
        if "master" in roles or "worker" in roles:  # not joined yet: the versions are asked
            assert bins.version("kubeadm") == bins.version("kubelet") == "1.30.4"
        if "master" in roles:
            assert bins.get("kubectl") is not None
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


def _bring_up_etcd_and_lb(lab: Any, cluster: Any) -> tuple[str, str]:
    """By hand, with hactl's renderers (no apply): TLS etcd on the three members, HAProxy on
    the LB. Returns (the etcd CA's SHA-256 fingerprint, sha256 of the rendered haproxy.cfg)."""
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    from cryptography.hazmat.primitives import hashes

    from hactl.render import etcd as render_etcd
    from hactl.render.etcd_pki import build_etcd_pki
    from hactl.render.haproxy import CONFIG_PATH, render_haproxy_cfg

    pki = build_etcd_pki(cluster, key_type="ecdsa")
    members = [h.name for h in cluster.etcd_members]
    for name in members:
        for f in pki.member_files(name):
            lab.put(name, f.path, f.reveal(), f.mode)
        lab.put(name, render_etcd.ENV_PATH, render_etcd.render_etcd_env(cluster, name))
        lab.put(name, render_etcd.UNIT_PATH, render_etcd.render_etcd_unit(cluster))
        assert lab.systemctl(name, "daemon-reload")[0] == 0

    def start(name: str) -> tuple[int, str, str]:
        return lab.systemctl(name, "enable", "--now", "etcd")  # type=notify: all together

    with ThreadPoolExecutor(len(members)) as pool:
        for name, (rc, _, err) in zip(members, pool.map(start, members), strict=True):
            assert rc == 0, f"{name}: {err}"
    _wait_client_urls_published(lab, cluster, members)
    cfg = render_haproxy_cfg(cluster)
    lab.put("lb01", CONFIG_PATH, cfg)
    rc, _, err = lab.systemctl("lb01", "restart", "haproxy")
    assert rc == 0, err
    ca = ":".join(f"{b:02X}" for b in pki.ca.cert.fingerprint(hashes.SHA256()))
    return ca, hashlib.sha256(cfg.encode()).hexdigest()


def _wait_client_urls_published(lab: Any, cluster: Any, members: list[str]) -> None:
    """A started etcd member publishes its client URLs through raft a moment later; until every
    member has applied that, member lists differ (empty ``clientURLs``). Wait for it, as a
    careful operator would, so the probe sees one settled cluster."""
    from hactl.plan import commands as cmd
    from hactl.probe import etcd_endpoint

    deadline = time.monotonic() + 60
    for name in members:
        argv = shlex.join(cmd.member_list(etcd_endpoint(cluster, cluster.host(name))))
        while True:
            res = lab.run(name, argv)
            listed = json.loads(res.stdout).get("members", []) if res.returncode == 0 else []
            if len(listed) == len(members) and all(m.get("clientURLs") for m in listed):
                break
            assert time.monotonic() < deadline, f"{name}: {res.stdout or res.stderr}"
            time.sleep(0.3)


def test_probe_fresh_then_running_etcd_and_lb_then_a_node_down_and_one_cut_off(
    lab_factory: Any,
) -> None:
    lab = lab_factory()
    cluster = load_cluster(lab.spec_file)
    _fresh_lab_probe(lab, cluster)
    ca_fingerprint, cfg_sha = _bring_up_etcd_and_lb(lab, cluster)
    members = ["etcd01", "etcd02", "etcd03"]
    masters = ["master01", "master02", "master03"]

    # HAProxy logs its first health checks by itself: let it settle (all masters DOWN) first
    log = "/var/log/hactl-lab/haproxy.service.log"
    deadline = time.monotonic() + 30
    while "has no server available" not in lab.run("lb01", f"cat {log}").stdout:
        assert time.monotonic() < deadline, "haproxy never marked the masters down"
        time.sleep(0.2)
    names = [h.name for h in cluster.all_hosts()]
    before = snapshot(lab, names)
    observed = asyncio.run(probe_cluster(cluster))
    after = snapshot(lab, names)
    for name in names:
        # a running etcd writes its own data dir and log; everything else must stay as it was
        own = ("/var/lib/etcd", "/var/log/hactl-lab/etcd.service.log") if name in members else ()
        moved = [c for c in changes(before[name][0], after[name][0]) if not c[2:].startswith(own)]
        assert moved == [], f"{name}: the probe wrote files"
        assert changes(before[name][1], after[name][1]) == [], f"{name}: processes changed"

    assert observed.unreachable() == []
    views = observed.etcd_member_views()
    assert set(views) == set(members)
    agreed = observed.etcd_members()
    assert agreed is not None and sorted(m.name for m in agreed) == members
    assert all(m.started and not m.is_learner for m in agreed)
    ids = set()
    for name in members:
        etcd = observed[name].etcd
        assert etcd is not None, observed[name].section_errors
        assert etcd.active and etcd.enabled and etcd.unit_present and etcd.env_present
        assert etcd.data_dir_state == "member"
        assert etcd.initial_cluster_state == "new"
        assert etcd.env["ETCD_NAME"] == name
        assert etcd.ca_fingerprint == ca_fingerprint
        assert etcd.health is not None and etcd.health.healthy, etcd.health
        assert etcd.status is not None and etcd.status.version == "3.4.23"
        assert etcd.server_version == "3.4.23"
        assert etcd.registry_keys == 0 and etcd.has_registry_data is False
        assert etcd.query_error is None
        assert observed.etcd_healthy(name)
        ids.add(etcd.status.member_id)
        assert etcd.members == views["etcd01"]
    assert ids == {m.id for m in agreed}
    lb = observed["lb01"].haproxy
    assert lb is not None and lb.active and lb.config_present
    assert lb.config_sha256 == cfg_sha
    assert lb.stats_error is None
    assert lb.backend("k8s-api-backend") == dict.fromkeys(masters, "DOWN")  # no API servers yet
    fingerprints = observed.fingerprint()
    again = asyncio.run(probe_cluster(cluster))
    assert again.fingerprint() == fingerprints  # stable while nothing changes

    lab.stop("etcd03")  # power off
    lab.partition("lb01")  # link cut: connect times out
    started = time.monotonic()
    degraded = asyncio.run(probe_cluster(cluster))
    elapsed = time.monotonic() - started
    assert degraded.unreachable() == ["etcd03", "lb01"]
    assert elapsed < cluster.ssh.connect_timeout + 30
    assert "etcd03" in (degraded["etcd03"].error or "")
    assert "lb01" in (degraded["lb01"].error or "") or "198." in (degraded["lb01"].error or "")
    survivors = degraded.etcd_members()
    assert survivors is not None and sorted(m.name for m in survivors) == members
    assert degraded.etcd_healthy("etcd01") and degraded.etcd_healthy("etcd02")  # 2 of 3: quorum
    changed = {h for h, fp in degraded.fingerprint().items() if fp != fingerprints[h]}
    assert {"etcd03", "lb01"} <= changed


def test_probe_converged_cluster_reads_the_api_and_writes_nothing(shared_lab: Any) -> None:
    """After `hactl apply` (the session's shared converged lab, tests/lab/conftest.py): the API
    facts come from the masters' real kubectl, and even with every component running the probe
    leaves no trace (no kubectl cache, no temp file)."""
    lab = shared_lab()
    cluster = load_cluster(lab.spec_file)
    names = [h.name for h in cluster.all_hosts()]
    masters = [h.name for h in cluster.masters]

    def own(name: str) -> tuple[str, ...]:
        # what the running services write by themselves: logs, etcd's data, kubelet state
        return ("/var/log/hactl-lab/", "/var/lib/etcd", "/var/lib/kubelet", "/var/lib/hactl-lab")

    time.sleep(2)  # let the start-up log lines land
    before = snapshot(lab, names)
    observed = asyncio.run(probe_cluster(cluster))
    after = snapshot(lab, names)
    for name in names:
        moved = [
            c for c in changes(before[name][0], after[name][0]) if not c[2:].startswith(own(name))
        ]
        assert moved == [], f"{name}: the probe wrote files"
        assert changes(before[name][1], after[name][1]) == [], f"{name}: processes changed"
        assert ".hactl-tmp" not in after[name][0]

    assert observed.unreachable() == []
    assert all(observed[n].section_errors == {} for n in names), {
        n: observed[n].section_errors for n in names
    }
    assert observed.first_initialised_master(masters) == "master01"
    view = observed.cluster_view(masters)
    assert view is not None and view.errors == {}
    assert sorted(n.name for n in view.nodes) == sorted(
        [*masters, *(h.name for h in cluster.workers)]
    )
    assert all(n.ready for n in view.nodes)
    assert sorted(n.name for n in view.nodes if n.control_plane) == masters
    assert view.control_plane_endpoint == cluster.control_plane_endpoint
    assert len(view.etcd_endpoints) == 3
    assert view.kubernetes_version == cluster.kubernetes.version
    assert view.kubeadm_certs_created is not None
    assert any("authentication" in t.usages for t in view.bootstrap_tokens)
    for name in masters:
        k8s = observed[name].kubernetes
        assert k8s is not None and k8s.initialised and k8s.joined and k8s.kubelet_active
        assert "/etc/kubernetes/pki/apiserver.crt" in k8s.cert_expiry
    for worker in cluster.workers:
        k8s = observed[worker.name].kubernetes
        assert k8s is not None and k8s.joined and not k8s.initialised
    lb = observed["lb01"].haproxy
    assert lb is not None and lb.backend("k8s-api-backend") == dict.fromkeys(masters, "UP")
    members = observed.etcd_members()
    assert members is not None and len(members) == 3
    assert all(observed.etcd_healthy(h.name) for h in cluster.etcd_members)
    assert all((observed[h.name].etcd or Any).registry_keys > 0 for h in cluster.etcd_members)

    # The API is asked once (master01's kubectl); the other masters only when it cannot answer
    assert observed["master01"].kubernetes is not None
    assert observed["master02"].kubernetes is not None
    assert observed["master02"].kubernetes.cluster is None
    for name in names:
        bins = observed[name].binaries
        assert bins is not None
        if name in masters or name in {w.name for w in cluster.workers}:  # joined: not asked
            assert bins.get("kubelet") is not None and bins.version("kubelet") is None
    lab.stop("master01")
    try:
        down = asyncio.run(probe_cluster(cluster))
    finally:
        lab.start("master01")
    assert down.unreachable() == ["master01"]
    view = down.cluster_view(masters)
    assert view is not None and view.errors == {}
    assert down["master02"].kubernetes is not None
    assert down["master02"].kubernetes.cluster == view  # asked in the second round
    assert sorted(n.name for n in view.nodes) == sorted(
        [*masters, *(h.name for h in cluster.workers)]
    )
    assert view.node("master02") is not None and view.node("master02").kubelet_version  # type: ignore[union-attr]
