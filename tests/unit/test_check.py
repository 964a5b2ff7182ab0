"""hactl check's pure evaluation over data, and its gathering round trip through FakeTransport."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hactl.check import (
    ApiAnswer,
    CheckData,
    Lease,
    api_script,
    evaluate,
    gather,
    parse_api_output,
    parse_leases,
)
from hactl.facts.model import (
    BackendServer,
    ClusterView,
    EtcdFacts,
    EtcdHealth,
    EtcdMember,
    HAProxyFacts,
    HostFacts,
    KubernetesFacts,
    NodeInfo,
    Observed,
)
from hactl.render.haproxy import BACKEND
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.transport.fake import FakeTransport

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 26, 23, 0, tzinfo=UTC)
CP = {"node-role.kubernetes.io/control-plane": ""}


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return load_file(ROOT / "specs" / "lab.yaml").cluster


def members(cluster: Cluster) -> tuple[EtcdMember, ...]:
    return tuple(
        EtcdMember(
            f"{i + 1:x}a", h.name, (f"https://{h.address}:2380",), (f"https://{h.address}:2379",)
        )
        for i, h in enumerate(cluster.etcd_members)
    )


def etcd_facts(cluster: Cluster, name: str, **changes: object) -> EtcdFacts:
    address = cluster.host(name).address
    facts = EtcdFacts(
        unit_present=True,
        active=True,
        enabled=True,
        env_present=True,
        env_sha256="x",
        env={},
        data_dir="/var/lib/etcd",
        data_dir_state="member",
        ca_fingerprint="AA",
        members=members(cluster),
        health=EtcdHealth(f"https://{address}:2379", True),
    )
    return dataclasses.replace(facts, **changes)  # type: ignore[arg-type]


def healthy(cluster: Cluster) -> dict[str, HostFacts]:
    hosts: dict[str, HostFacts] = {}
    for h in cluster.etcd_members:
        hosts[h.name] = HostFacts(h.name, str(h.address), True, etcd=etcd_facts(cluster, h.name))
    servers = tuple(BackendServer(BACKEND, m.name, "UP") for m in cluster.masters)
    for h in cluster.load_balancer.hosts:
        hosts[h.name] = HostFacts(
            h.name,
            str(h.address),
            True,
            haproxy=HAProxyFacts(True, "x", "cfg", True, True, servers),
        )
    nodes = tuple(NodeInfo(m.name, True, CP) for m in cluster.masters) + tuple(
        NodeInfo(w.name, True, {}) for w in cluster.workers
    )
    view = ClusterView(nodes=nodes)
    expiry = {"/etc/kubernetes/pki/apiserver.crt": NOW + timedelta(days=365)}
    for m in cluster.masters:
        hosts[m.name] = HostFacts(
            m.name,
            str(m.address),
            True,
            kubernetes=KubernetesFacts(
                True, True, ("kube-apiserver.yaml",), ("ca.crt",), True, expiry, view
            ),
        )
    return hosts


def leases() -> dict[str, Lease]:
    return {
        "kube-scheduler": Lease("kube-scheduler", "master02_abc", NOW - timedelta(seconds=3), 15),
        "kube-controller-manager": Lease(
            "kube-controller-manager", "master01_def", NOW - timedelta(seconds=5), 15
        ),
    }


def data(
    cluster: Cluster, hosts: dict[str, HostFacts] | None = None, **changes: object
) -> CheckData:
    base = CheckData(
        Observed(hosts if hosts is not None else healthy(cluster), NOW),
        NOW,
        ApiAnswer("master01 via https://k8s-api.lab:6443", True, "ok"),
        leases(),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def errors(report_data: CheckData, cluster: Cluster) -> list[tuple[str, str, str]]:
    report = evaluate(cluster, report_data)
    return [(f.check, f.subject, f.message) for f in report.findings if f.severity == "error"]


def test_a_healthy_cluster_passes_with_a_readable_report(cluster: Cluster) -> None:
    report = evaluate(cluster, data(cluster))
    assert report.healthy, report.render_text()
    text = report.render_text()
    assert text.endswith("Cluster 'lab' is healthy.")
    assert "[ok  ] leases: kube-scheduler: one leader: master02_abc" in text
    assert "[ok  ] etcd: members: 3 members as in the spec, all started" in text
    assert "[ok  ] load_balancer: lb01: 3 backends UP" in text
    assert "master01: 2027-11-26" in text  # certificate expiry summary
    doc = report.to_data()
    assert json.loads(json.dumps(doc))["healthy"] is True
    assert {f["check"] for f in doc["findings"]} == {
        "api",
        "masters",
        "workers",
        "nodes",
        "leases",
        "etcd",
        "load_balancer",
        "certificates",
    }
    assert "[ok  ] workers: nodes: 2 registered, Ready" in text


def test_api_not_ready_through_the_lb(cluster: Cluster) -> None:
    bad = data(cluster, api=ApiAnswer("master01", False, "connection refused"))
    assert errors(bad, cluster) == [
        ("api", "k8s-api.lab:6443", "/readyz through the load balancer failed: connection refused")
    ]
    report = evaluate(cluster, bad)
    assert not report.healthy
    assert "next: " in report.render_text()


def test_master_not_ready_missing_or_unlabelled(cluster: Cluster) -> None:
    hosts = healthy(cluster)
    nodes = (
        NodeInfo("master01", True, CP),
        NodeInfo("master02", False, CP),
        NodeInfo("master03", True, {}),
        *(NodeInfo(w.name, True, {}) for w in cluster.workers),
    )
    view = ClusterView(nodes=nodes)
    for name in ("master01", "master02", "master03"):
        k = hosts[name].kubernetes
        assert k is not None
        hosts[name] = dataclasses.replace(
            hosts[name], kubernetes=dataclasses.replace(k, cluster=view)
        )
    assert errors(data(cluster, hosts), cluster) == [
        ("masters", "master02", "Node is not Ready"),
        ("masters", "master03", "Node lacks the node-role.kubernetes.io/control-plane label"),
    ]
    view2 = ClusterView(nodes=nodes[:1])
    k = hosts["master01"].kubernetes
    assert k is not None
    hosts["master01"] = dataclasses.replace(
        hosts["master01"], kubernetes=dataclasses.replace(k, cluster=view2)
    )
    found = errors(data(cluster, hosts), cluster)
    assert ("masters", "master02", "not registered as a Node") in found


def with_nodes(cluster: Cluster, nodes: tuple[NodeInfo, ...]) -> dict[str, HostFacts]:
    hosts = healthy(cluster)
    view = ClusterView(nodes=nodes)
    for m in cluster.masters:
        k = hosts[m.name].kubernetes
        assert k is not None
        hosts[m.name] = dataclasses.replace(
            hosts[m.name], kubernetes=dataclasses.replace(k, cluster=view)
        )
    return hosts


def test_every_worker_must_be_a_node_and_not_ready_is_a_warning(cluster: Cluster) -> None:
    masters = tuple(NodeInfo(m.name, True, CP) for m in cluster.masters)
    hosts = with_nodes(cluster, (*masters, NodeInfo("worker01", False, {})))
    report = evaluate(cluster, data(cluster, hosts))
    workers = [(f.severity, f.message) for f in report.findings if f.check == "workers"]
    assert workers == [
        ("error", "not registered as a Node: worker02"),
        ("warning", "Node not Ready: worker01"),
    ]
    assert not report.healthy
    assert "  - nodes: not registered as a Node: worker02" in report.render_text()
    # a NotReady worker alone does not make the control plane unhealthy
    hosts = with_nodes(cluster, (*masters, *(NodeInfo(w.name, False, {}) for w in cluster.workers)))
    report = evaluate(cluster, data(cluster, hosts))
    assert report.healthy and [f.severity for f in report.findings if f.check == "workers"] == [
        "warning"
    ]


def test_leases_need_one_unexpired_holder(cluster: Cluster) -> None:
    stale = leases()
    stale["kube-scheduler"] = Lease(
        "kube-scheduler", "master02_abc", NOW - timedelta(seconds=60), 15
    )
    del stale["kube-controller-manager"]
    assert errors(data(cluster, leases=stale), cluster) == [
        ("leases", "kube-scheduler", "leader master02_abc stopped renewing its Lease"),
        ("leases", "kube-controller-manager", "no leader (no Lease holder)"),
    ]
    unread = errors(data(cluster, leases=None, leases_error="forbidden"), cluster)
    assert unread == [("leases", "kube-system", "leases unreadable: forbidden")]


def test_etcd_membership_learners_and_per_member_health(cluster: Cluster) -> None:
    hosts = healthy(cluster)
    listed = (
        *members(cluster)[:2],
        EtcdMember("ff", "", ("https://198.18.0.99:2380",), ()),  # added, never started
        EtcdMember("ee", "etcd09", ("https://198.18.0.29:2380",), (), is_learner=True),
    )
    for name in ("etcd01", "etcd02"):
        hosts[name] = dataclasses.replace(
            hosts[name], etcd=etcd_facts(cluster, name, members=listed)
        )
    hosts["etcd03"] = HostFacts("etcd03", "198.18.0.23", False, error="connection refused")
    hosts["etcd02"] = dataclasses.replace(
        hosts["etcd02"],
        etcd=etcd_facts(
            cluster,
            "etcd02",
            members=listed,
            health=EtcdHealth("https://198.18.0.22:2379", False, "context deadline exceeded"),
        ),
    )
    assert errors(data(cluster, hosts), cluster) == [
        ("etcd", "members", "missing from the cluster: etcd03"),
        ("etcd", "members", "not in the spec: etcd09"),
        ("etcd", "members", "added but never started: ff"),
        ("etcd", "members", "still learners: etcd09"),
        ("etcd", "etcd02", "unhealthy: context deadline exceeded"),
        ("etcd", "etcd03", "health unknown: connection refused"),
    ]


def test_no_etcd_member_answers(cluster: Cluster) -> None:
    hosts = healthy(cluster)
    for h in cluster.etcd_members:
        hosts[h.name] = dataclasses.replace(
            hosts[h.name],
            etcd=etcd_facts(
                cluster, h.name, members=None, health=None, query_error="etcd is not running"
            ),
        )
    found = errors(data(cluster, hosts), cluster)
    assert found[0] == ("etcd", "members", "no etcd member answered `member list`")
    assert ("etcd", "etcd01", "health unknown: etcd is not running") in found


def test_haproxy_backends_must_all_be_up_one_per_master(cluster: Cluster) -> None:
    hosts = healthy(cluster)
    servers = (BackendServer(BACKEND, "master01", "UP"), BackendServer(BACKEND, "master02", "DOWN"))
    hosts["lb01"] = dataclasses.replace(
        hosts["lb01"], haproxy=HAProxyFacts(True, "x", "cfg", True, True, servers)
    )
    assert errors(data(cluster, hosts), cluster) == [
        ("load_balancer", "lb01", "backends not UP: master02 DOWN"),
        ("load_balancer", "lb01", "no backend server for master03"),
    ]
    hosts["lb01"] = dataclasses.replace(
        hosts["lb01"], haproxy=HAProxyFacts(True, "x", "cfg", False, True)
    )
    assert errors(data(cluster, hosts), cluster) == [
        ("load_balancer", "lb01", "haproxy is not running")
    ]


def test_certificate_expiry_warns_then_fails(cluster: Cluster) -> None:
    hosts = healthy(cluster)
    k = hosts["master02"].kubernetes
    assert k is not None
    soon = {"/etc/kubernetes/pki/apiserver.crt": NOW + timedelta(days=10)}
    hosts["master02"] = dataclasses.replace(
        hosts["master02"], kubernetes=dataclasses.replace(k, cert_expiry=soon)
    )
    report = evaluate(cluster, data(cluster, hosts))
    assert report.healthy
    assert [(f.subject, f.severity) for f in report.problems] == [("master02", "warning")]
    gone = {"/etc/kubernetes/pki/apiserver.crt": NOW - timedelta(days=1)}
    hosts["master02"] = dataclasses.replace(
        hosts["master02"], kubernetes=dataclasses.replace(k, cert_expiry=gone)
    )
    assert errors(data(cluster, hosts), cluster) == [
        ("certificates", "master02", "/etc/kubernetes/pki/apiserver.crt expired on 2026-11-25")
    ]


def test_nothing_initialised_yet(cluster: Cluster) -> None:
    bare = {h.name: HostFacts(h.name, str(h.address), True) for h in cluster.all_hosts()}
    report = evaluate(cluster, CheckData(Observed(bare, NOW), NOW, None, None, "no admin.conf"))
    assert not report.healthy
    checks = {f.check for f in report.findings if f.severity == "error"}
    assert checks == {"api", "masters", "leases", "etcd", "load_balancer"}


LEASES_JSON = json.dumps(
    {
        "items": [
            {
                "metadata": {"name": "kube-scheduler"},
                "spec": {
                    "holderIdentity": "master02_abc",
                    "renewTime": "2026-11-26T22:59:58.123456Z",
                    "leaseDurationSeconds": 15,
                },
            },
            {
                "metadata": {"name": "kube-controller-manager"},
                "spec": {
                    "holderIdentity": "master01_def",
                    "renewTime": "2026-11-26T22:59:59.000000Z",
                    "leaseDurationSeconds": 15,
                },
            },
            {"metadata": {"name": "apiserver-xyz"}, "spec": {}},
        ]
    }
)


def test_parse_api_output_and_leases() -> None:
    out = f"@@readyz\nok\n@@rc 0\n@@leases\n{LEASES_JSON}\n@@rc 0\n@@now\n1795734000\n"
    sections = parse_api_output(out)
    assert sections["readyz"] == (0, "ok")
    assert sections["now"] == (0, "1795734000")
    parsed = parse_leases(sections["leases"][1])
    assert parsed["kube-scheduler"].holder == "master02_abc"
    assert parsed["kube-scheduler"].valid_at(NOW)
    assert parsed["apiserver-xyz"].holder is None


async def test_gather_asks_one_master_once_through_the_lb(cluster: Cluster) -> None:
    hosts = healthy(cluster)
    fakes = {name: FakeTransport(name) for name in hosts}
    fakes["master01"].fail_with = None
    k = hosts["master01"].kubernetes
    assert k is not None
    hosts["master01"] = dataclasses.replace(
        hosts["master01"], kubernetes=dataclasses.replace(k, admin_conf=False)
    )
    fakes["master02"].on(
        lambda wire: "@@readyz" in wire,
        stdout=f"@@readyz\nok\n@@rc 0\n@@leases\n{LEASES_JSON}\n@@rc 0\n@@now\n{int(NOW.timestamp())}\n",
    )

    async def observe() -> Observed:
        return Observed(hosts, NOW)

    gathered = await gather(cluster, lambda h: fakes[h], observe)
    assert gathered.api is not None and gathered.api.ok
    assert gathered.api.via == "master02 via https://k8s-api.lab:6443"
    assert gathered.now == NOW
    assert fakes["master01"].calls == [] and len(fakes["master02"].calls) == 1
    assert "--server https://k8s-api.lab:6443 get --raw /readyz" in fakes["master02"].calls[0].wire
    assert evaluate(cluster, gathered).healthy


async def test_gather_asks_the_preferred_master_first(cluster: Cluster) -> None:
    """The Verify step names the master its check asks (``via``); the others only if it fails."""
    hosts = healthy(cluster)
    fakes = {name: FakeTransport(name) for name in hosts}
    for name in ("master01", "master03"):
        fakes[name].on(
            lambda wire: "@@readyz" in wire,
            stdout=f"@@readyz\nok\n@@rc 0\n@@leases\n{LEASES_JSON}\n@@rc 0\n@@now\n{int(NOW.timestamp())}\n",
        )

    async def observe() -> Observed:
        return Observed(hosts, NOW)

    gathered = await gather(cluster, lambda h: fakes[h], observe, prefer="master03")
    assert gathered.api is not None and gathered.api.via.startswith("master03 ")
    assert fakes["master01"].calls == [] and len(fakes["master03"].calls) == 1


async def test_gather_reports_readyz_failure(cluster: Cluster) -> None:
    hosts = healthy(cluster)
    fake = FakeTransport("master01").on(
        lambda wire: True,
        stdout="@@readyz\nUnable to connect to the server: dial tcp: connection refused\n@@rc 1\n"
        "@@leases\nerror: the server is unavailable\n@@rc 1\n@@now\n1795734000\n",
    )

    async def observe() -> Observed:
        return Observed(hosts, NOW)

    gathered = await gather(cluster, lambda _h: fake, observe)
    assert gathered.api is not None and not gathered.api.ok
    assert "connection refused" in gathered.api.detail
    assert gathered.leases is None and gathered.leases_error == "error: the server is unavailable"
    assert "kubectl --kubeconfig /etc/kubernetes/admin.conf" in api_script(cluster)


def test_api_script_output_parses_when_kubectl_prints_no_newline(cluster: Cluster) -> None:
    """``kubectl get --raw /readyz`` prints ``ok`` without a newline: the sections still split."""
    import subprocess

    stub = 'kubectl() { case "$*" in *readyz*) printf ok;; *lease*) printf \'{"items": []}\';; esac; }\n'
    out = subprocess.run(
        ["/bin/sh", "-c", stub + api_script(cluster)], capture_output=True, text=True, check=True
    ).stdout
    sections = parse_api_output(out)
    assert sections["readyz"] == (0, "ok")
    assert sections["leases"] == (0, '{"items": []}')
    assert sections["now"][1].isdigit()


def test_stacked_etcd_is_asked_from_a_master_with_kubeadm_certs() -> None:
    """Stacked etcd runs as static pods (no etcd unit for the probe to read): the check's master
    round trip lists members and asks each member's own health with kubeadm's certificates."""
    import subprocess

    from hactl.check.gather import parse_etcd_view, stacked_etcd_script

    stacked = load_file(ROOT / "specs" / "stacked.yaml").cluster
    members = {
        "header": {"cluster_id": 1, "member_id": 2},
        "members": [
            {
                "ID": 100 + i,
                "name": m.name,
                "peerURLs": [f"https://{m.address}:2380"],
                "clientURLs": [f"https://{m.address}:2379"],
            }
            for i, m in enumerate(stacked.masters)
        ],
    }
    bad = str(stacked.masters[2].address)
    stub = (
        'etcdctl() { case "$*" in\n'
        f"  *'member list'*) echo '{json.dumps(members)}';;\n"
        f'  *{bad}*\'endpoint health\'*) echo \'{{"level":"warn","msg":"retrying"}}\' >&2;'
        f' echo \'[{{"endpoint":"https://{bad}:2379","health":false,'
        '"error":"context deadline exceeded"}]\'; return 1;;\n'
        '  *\'endpoint health\'*) echo "[{\\"endpoint\\":\\"x\\",\\"health\\":true}]";;\n'
        "esac; }\n"
    )
    script = stacked_etcd_script(stacked)
    assert "--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt" in script
    assert script.count("endpoint health") == 3
    out = subprocess.run(
        ["/bin/sh", "-c", stub + script], capture_output=True, text=True, check=True
    ).stdout
    view = parse_etcd_view(stacked, parse_api_output(out))
    assert view.members is not None and [m.name for m in view.members] == [
        "master01",
        "master02",
        "master03",
    ]
    report = evaluate(
        stacked,
        CheckData(Observed({}, NOW), NOW, ApiAnswer("m", True, "ok"), leases(), etcd_view=view),
    )
    etcd = [(f.subject, f.severity, f.message) for f in report.findings if f.check == "etcd"]
    assert etcd == [
        ("members", "ok", "3 members as in the spec, all started"),
        ("master01", "ok", "endpoint health true"),
        ("master02", "ok", "endpoint health true"),
        ("master03", "error", "unhealthy: context deadline exceeded"),
    ]
    hint = next(f.hint for f in report.findings if f.subject == "master03")
    assert hint is not None and "etcd pod" in hint
