"""The Observed model: fingerprints ignore volatile values, accessors pick what the diff needs."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

from hactl.facts.model import (
    CertDates,
    ClusterView,
    EtcdFacts,
    EtcdHealth,
    EtcdMember,
    EtcdStatus,
    HostFacts,
    KubernetesFacts,
    Observed,
    SystemFacts,
    to_data,
)

NOW = datetime(2030, 1, 1, tzinfo=UTC)
A = EtcdMember("a1", "etcd01", ("https://10.0.0.21:2380",), ("https://10.0.0.21:2379",))
B = EtcdMember("b2", "etcd02", ("https://10.0.0.22:2380",), ("https://10.0.0.22:2379",))
C = EtcdMember("c3", "", ("https://10.0.0.23:2380",), ())


def etcd_host(name: str, members: tuple[EtcdMember, ...] | None, healthy: bool = True) -> HostFacts:
    facts = EtcdFacts(
        unit_present=True,
        active=members is not None,
        enabled=True,
        env_present=True,
        env_sha256="00",
        env={"ETCD_NAME": name},
        data_dir="/var/lib/etcd",
        data_dir_state="member",
        ca_fingerprint=None,
        members=members,
        status=EtcdStatus("https://127.0.0.1:2379", "a1", "cc", "3.4.23", raft_index=5),
        health=EtcdHealth("https://127.0.0.1:2379", healthy, took="1ms"),
        registry_keys=0,
    )
    return HostFacts(
        name, "10.0.0.1", True, system=SystemFacts(name, uptime_seconds=1.0), etcd=facts
    )


def master(name: str, initialised: bool, nodes_error: bool = False) -> HostFacts:
    view = ClusterView(errors={"nodes": "timeout"} if nodes_error else {})
    k8s = KubernetesFacts(
        admin_conf=initialised,
        kubelet_conf=initialised,
        manifests=("kube-apiserver.yaml",) if initialised else (),
        pki_files=(),
        kubelet_active=initialised,
        cert_expiry={},
        cluster=view if initialised else None,
    )
    return HostFacts(name, "10.0.0.11", True, kubernetes=k8s)


def test_fingerprint_ignores_volatile_values_only() -> None:
    host = etcd_host("etcd01", (A, B))
    assert host.etcd is not None and host.etcd.status is not None and host.system is not None
    later = dataclasses.replace(
        host,
        duration=9.0,
        system=dataclasses.replace(host.system, uptime_seconds=99.0),
        etcd=dataclasses.replace(
            host.etcd,
            status=dataclasses.replace(host.etcd.status, raft_index=77, leader_id="b2"),
            health=EtcdHealth("https://127.0.0.1:2379", True, took="9ms"),
        ),
    )
    assert later.fingerprint() == host.fingerprint()
    assert etcd_host("etcd01", (A,)).fingerprint() != host.fingerprint()
    assert etcd_host("etcd01", (A, B), healthy=False).fingerprint() != host.fingerprint()
    observed = Observed({"etcd02": etcd_host("etcd02", None), "etcd01": host}, NOW)
    assert list(observed.fingerprint()) == ["etcd01", "etcd02"]
    json.dumps(to_data(observed))  # JSON-able as is


def test_etcd_members_is_the_majority_view() -> None:
    observed = Observed(
        {
            "etcd01": etcd_host("etcd01", (A, B, C)),
            "etcd02": etcd_host("etcd02", (A, B)),
            "etcd03": etcd_host("etcd03", (B, A)),
            "etcd04": etcd_host("etcd04", None),
            "etcd05": HostFacts("etcd05", "10.0.0.25", False, error="unreachable"),
        },
        NOW,
    )
    assert observed.etcd_members() == (A, B)
    assert observed.etcd_members(["etcd01"]) == (A, B, C)
    assert set(observed.etcd_member_views()) == {"etcd01", "etcd02", "etcd03"}
    assert observed.etcd("etcd05") is None and observed.unreachable() == ["etcd05"]
    assert observed.etcd_healthy("etcd01") and not observed.etcd_healthy("etcd05")
    assert not C.started and A.started
    assert Observed({"x": etcd_host("x", None)}, NOW).etcd_members() is None


def test_first_initialised_master_and_cluster_view_follow_spec_order() -> None:
    observed = Observed(
        {
            "master01": master("master01", False),
            "master02": master("master02", True, nodes_error=True),
            "master03": master("master03", True),
        },
        NOW,
    )
    order = ["master01", "master02", "master03"]
    assert observed.first_initialised_master(order) == "master02"
    assert observed.first_initialised_master(["master03", "master02"]) == "master03"
    view = observed.cluster_view(order)
    assert view is observed["master03"].kubernetes.cluster  # type: ignore[union-attr]
    assert observed.first_initialised_master(["master01"]) is None
    certs = ClusterView(kubeadm_certs_created=datetime(2029, 12, 31, 23, tzinfo=UTC))
    assert certs.kubeadm_certs_age(NOW) == 3600.0
    assert ClusterView().kubeadm_certs_age(NOW) is None


def test_a_certificates_share_of_life_used() -> None:
    start = NOW - timedelta(days=90)
    cert = CertDates(not_after=start + timedelta(days=100), not_before=start)
    assert cert.life_used(NOW) == 0.9
    assert cert.life_used(start) == 0.0
    assert cert.life_used(NOW + timedelta(days=20)) == 1.1  # expired: past its whole life
    assert CertDates(not_after=NOW).life_used(NOW) is None  # no start: not known
    assert CertDates(not_after=start, not_before=start).life_used(NOW) is None  # empty validity


def test_new_kubernetes_facts_default_to_not_known() -> None:
    """Facts built without the certificate and rotation reads compare nothing (None)."""
    k8s = master("master01", True).kubernetes
    assert k8s is not None
    assert (k8s.kubelet_client_cert, k8s.kubelet_rotates_certificates, k8s.apiserver_sans) == (
        None, None, None)
