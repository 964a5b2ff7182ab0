"""Issue 12: every difference between the spec and a converged cluster is a change or a refusal.
Spec edits on the facts of a converged cluster (Synthetic) that used to plan "No changes"."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from hactl.errors import PlanError
from hactl.facts.model import NodeInfo
from hactl.plan.planner import build_plan
from hactl.plan.synthetic import PROBED_AT, Synthetic
from hactl.spec.load import load_file
from hactl.spec.models import Cluster

SPECS = Path(__file__).resolve().parents[2] / "specs"


@pytest.fixture(scope="module")
def lab() -> Cluster:
    return load_file(str(SPECS / "lab.yaml")).cluster


def edited(cluster: Cluster, **kubernetes: Any) -> Cluster:
    doc = cluster.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["kubernetes"].update(kubernetes)
    return Cluster.model_validate(doc)


def refusal(cluster: Cluster, synthetic: Synthetic) -> str:
    with pytest.raises(PlanError) as caught:
        build_plan(cluster, synthetic.observed(), now=PROBED_AT)
    return str(caught.value)


def test_converged_cluster_still_plans_no_changes(lab: Cluster) -> None:
    plan = build_plan(lab, Synthetic(lab).converged().observed(), now=PROBED_AT)
    assert plan.counts() == (0, 0, 0)


@pytest.mark.parametrize("version", ["1.30.9", "1.31.2", "v1.30.9"])
def test_version_upgrade_is_refused(lab: Cluster, version: str) -> None:
    message = refusal(edited(lab, version=version), Synthetic(lab).converged())
    wanted = version.lstrip("v")
    assert (f"kubernetes.version: live 1.30.4, spec {wanted}: hactl cannot upgrade a cluster yet "
            "(a later issue builds it); put 1.30.4 back in the spec, or upgrade by hand with "
            "kubeadm upgrade") in message


def test_version_downgrade_is_refused_as_such(lab: Cluster) -> None:
    message = refusal(edited(lab, version="1.29.0"), Synthetic(lab).converged())
    assert "kubernetes.version: live 1.30.4, spec 1.29.0: that is a downgrade" in message
    assert "put 1.30.4 back in the spec" in message
    assert "upgrade" not in message.split("downgrade", 1)[1]


def test_version_written_with_or_without_v_is_the_same(lab: Cluster) -> None:
    for version in ("1.30.4", "v1.30.4"):
        plan = build_plan(edited(lab, version=version), Synthetic(lab).converged().observed(),
                          now=PROBED_AT)
        assert plan.counts() == (0, 0, 0)


@pytest.mark.parametrize(("field", "value", "live"), [
    ("podSubnet", "10.245.0.0/16", "10.244.0.0/16"),
    ("serviceSubnet", "10.97.0.0/16", "10.96.0.0/12"),
])
def test_networks_cannot_change_after_init(lab: Cluster, field: str, value: str, live: str) -> None:
    message = refusal(edited(lab, **{field: value}), Synthetic(lab).converged())
    what = "pod network" if field == "podSubnet" else "service network"
    assert (f"kubernetes.{field} cannot change after kubeadm init: live {live}, spec {value}; put "
            f"the live value back in the spec (a new {what} needs a new cluster)") in message


def test_dns_domain_cannot_change_after_init(lab: Cluster) -> None:
    message = refusal(edited(lab, dnsDomain="corp.local"), Synthetic(lab).converged())
    assert ("kubernetes.dnsDomain cannot change after kubeadm init: live cluster.local, spec "
            "corp.local") in message


def test_all_kubernetes_fields_are_listed_at_once(lab: Cluster) -> None:
    message = refusal(edited(lab, version="1.31.2", podSubnet="10.245.0.0/16",
                             serviceSubnet="10.97.0.0/16", dnsDomain="corp.local"),
                      Synthetic(lab).converged())
    for field in ("version", "podSubnet", "serviceSubnet", "dnsDomain"):
        assert f"kubernetes.{field}" in message


def test_live_values_written_another_way_are_not_differences(lab: Cluster) -> None:
    synthetic = Synthetic(lab).converged()
    observed = synthetic.observed()
    master = observed.hosts["master01"]
    assert master.kubernetes is not None and master.kubernetes.cluster is not None
    view = replace(master.kubernetes.cluster, pod_subnet="10.244.0.0/16", dns_domain="Cluster.Local.")
    hosts = dict(observed.hosts)
    hosts["master01"] = replace(master, kubernetes=replace(master.kubernetes, cluster=view))
    plan = build_plan(lab, replace(observed, hosts=hosts), now=PROBED_AT)
    assert plan.counts() == (0, 0, 0)


def test_networks_the_probe_could_not_read_are_not_compared(lab: Cluster) -> None:
    observed = Synthetic(lab).converged().observed()
    master = observed.hosts["master01"]
    assert master.kubernetes is not None and master.kubernetes.cluster is not None
    view = replace(master.kubernetes.cluster, pod_subnet=None, service_subnet=None, dns_domain=None,
                   kubernetes_version=None)
    hosts = dict(observed.hosts)
    hosts["master01"] = replace(master, kubernetes=replace(master.kubernetes, cluster=view))
    plan = build_plan(edited(lab, podSubnet="10.245.0.0/16"), replace(observed, hosts=hosts),
                      now=PROBED_AT)
    assert plan.counts() == (0, 0, 0)


def test_a_kubelet_of_another_version_is_refused(lab: Cluster) -> None:
    synthetic = Synthetic(lab).converged()
    synthetic.nodes = [replace(n, kubelet_version="v1.30.2") if n.name == "worker02" else n
                       for n in synthetic.nodes]
    message = refusal(lab, synthetic)
    assert "kubernetes.version: the kubelet of worker02 1.30.2 (Node status) is not the spec's 1.30.4" in message
    assert "kubeadm upgrade node" in message


def test_a_node_without_a_kubelet_version_is_not_compared(lab: Cluster) -> None:
    synthetic = Synthetic(lab).converged()
    synthetic.nodes = [NodeInfo(n.name, n.ready, n.labels, None) for n in synthetic.nodes]
    plan = build_plan(lab, synthetic.observed(), now=PROBED_AT)
    assert plan.counts() == (0, 0, 0)


def test_before_init_nothing_is_compared(lab: Cluster) -> None:
    plan = build_plan(edited(lab, version="1.30.9"), Synthetic(lab).etcd().lb().observed(),
                      now=PROBED_AT)
    assert "master[master01].init" in [s.id for s in plan.steps()]


def without(cluster: Cluster, role: str, name: str) -> Cluster:
    doc = cluster.model_dump(mode="json", by_alias=True, exclude_none=True)
    if role == "etcd":
        doc["etcd"]["members"] = [h for h in doc["etcd"]["members"] if h["name"] != name]
    else:
        doc[role] = [h for h in doc[role] if h["name"] != name]
    return Cluster.model_validate(doc)


# Nodes the spec no longer names are planned removals now: tests/unit/test_membership_plan.py


def test_a_master_removed_by_hand_and_from_the_spec_is_a_haproxy_change(lab: Cluster) -> None:
    """Once its Node is gone, what is left of a removed master is its haproxy backend: a change."""
    synthetic = Synthetic(lab).converged()
    synthetic.nodes = [n for n in synthetic.nodes if n.name != "master03"]
    plan = build_plan(without(lab, "masters", "master03"), synthetic.observed(), now=PROBED_AT)
    assert [s.id for s in plan.steps()] == ["lb[lb01].haproxy", "cluster.verify"]
    assert plan.counts() == (0, 1, 0)


def test_an_etcd_member_the_api_servers_use_taken_out_of_the_spec_is_planned(lab: Cluster) -> None:
    """Its removal comes after every API server stops listing it (tests/unit/test_etcd_consumers.py)."""
    plan = build_plan(without(lab, "etcd", "etcd03"), Synthetic(lab).converged().observed(),
                      now=PROBED_AT)
    steps = [s.id for s in plan.steps()]
    assert steps.index("master[master03].etcd-servers") < steps.index("etcd.member[etcd03].remove")



def test_an_extra_member_not_used_by_the_api_servers_is_still_a_planned_removal(lab: Cluster) -> None:
    """A member outside the spec that no API server lists (added by hand) is removed as before."""
    from hactl.diff import client_url, peer_url
    from hactl.facts.model import EtcdMember
    from hactl.plan.synthetic import member_id
    from hactl.spec.models import Host

    synthetic = Synthetic(lab).converged()
    extra_host = Host(name="etcd04", address="198.18.0.24")  # type: ignore[arg-type]
    extra = EtcdMember(member_id("etcd04"), "etcd04", (peer_url(lab, extra_host),),
                       (client_url(lab, extra_host),))
    for h in lab.etcd_members:
        facts = synthetic.hosts[h.name].etcd
        assert facts is not None and facts.members is not None
        synthetic.etcd_facts(h.name, members=(*facts.members, extra))
    plan = build_plan(lab, synthetic.observed(), now=PROBED_AT)
    assert "etcd.member[etcd04].remove" in [s.id for s in plan.steps()]


# -- §4: certificates expiring inside certificates.renewBeforeDays --------------------------


def test_a_kubeadm_certificate_12_hours_from_expiry_is_refused(lab: Cluster) -> None:
    synthetic = Synthetic(lab).converged()
    facts = synthetic.hosts["master02"].kubernetes
    assert facts is not None
    synthetic._set("master02", kubernetes=replace(facts, cert_expiry={
        "/etc/kubernetes/pki/apiserver.crt": PROBED_AT + timedelta(hours=12),
        "/etc/kubernetes/pki/ca.crt": PROBED_AT + timedelta(days=3650)}))
    message = refusal(lab, synthetic)
    assert ("kubeadm certificates expire within certificates.renewBeforeDays (30 days) of now: "
            "master02 /etc/kubernetes/pki/apiserver.crt expires 2026-01-02 00:00 UTC (0 days left). "
            "hactl does not renew certificates yet") in message
    assert "on master02 run `kubeadm certs renew all`" in message
    assert "ca.crt" not in message and "etcd certificates" not in message


def test_expired_and_ca_certificates_say_so(lab: Cluster) -> None:
    synthetic = Synthetic(lab).converged()
    facts = synthetic.hosts["master01"].kubernetes
    assert facts is not None
    synthetic._set("master01", kubernetes=replace(facts, cert_expiry={
        "/etc/kubernetes/pki/front-proxy-ca.crt": PROBED_AT + timedelta(days=29, hours=23),
        "/etc/kubernetes/pki/apiserver.crt": PROBED_AT - timedelta(days=1, hours=2)}))
    message = refusal(lab, synthetic)
    assert ("master01 /etc/kubernetes/pki/apiserver.crt expired 2025-12-31 10:00 UTC (1 day ago); "
            "master01 /etc/kubernetes/pki/front-proxy-ca.crt expires 2026-01-31 11:00 UTC (29 days left)") in message
    assert "`kubeadm certs renew` does not renew a CA (/etc/kubernetes/pki/front-proxy-ca.crt)" in message


def test_etcd_certificates_expiring_are_refused_with_no_reissue_built(lab: Cluster) -> None:
    synthetic = Synthetic(lab).converged()
    synthetic.etcd_facts("etcd02", cert_expiry={
        "/etc/etcd/pki/server.crt": PROBED_AT + timedelta(days=3),
        "/etc/etcd/pki/ca.crt": PROBED_AT + timedelta(days=3000)})
    message = refusal(lab, synthetic)
    assert ("etcd certificates expire within certificates.renewBeforeDays (30 days) of now: "
            "etcd02 /etc/etcd/pki/server.crt expires 2026-01-04 12:00 UTC (3 days left). hactl "
            "issued them and cannot re-issue them yet") in message
    assert "kubeadm certificates" not in message


def test_the_window_is_the_spec_s(lab: Cluster) -> None:
    doc = lab.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["certificates"] = {"renewBeforeDays": 2}
    narrow = Cluster.model_validate(doc)
    synthetic = Synthetic(lab).converged()
    synthetic.etcd_facts("etcd01", cert_expiry={"/etc/etcd/pki/peer.crt": PROBED_AT + timedelta(days=3)})
    assert build_plan(narrow, synthetic.observed(), now=PROBED_AT).counts() == (0, 0, 0)
    assert "(30 days)" in refusal(lab, synthetic)
    doc["certificates"] = {"renewBeforeDays": 4}
    assert "renewBeforeDays (4 days)" in refusal(Cluster.model_validate(doc), synthetic)


@pytest.mark.parametrize("value", [0, -1, "30", 30.0, 3651, True])
def test_renew_before_days_is_a_strict_whole_number_from_1(lab: Cluster, value: object) -> None:
    from pydantic import ValidationError

    doc = lab.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["certificates"] = {"renewBeforeDays": value}
    with pytest.raises(ValidationError):
        Cluster.model_validate(doc)


def test_certificates_are_checked_before_kubernetes_is_initialised(lab: Cluster) -> None:
    synthetic = Synthetic(lab).etcd().lb()
    synthetic.etcd_facts("etcd01", cert_expiry={"/etc/etcd/pki/ca.crt": PROBED_AT + timedelta(days=1)})
    assert "etcd01 /etc/etcd/pki/ca.crt expires" in refusal(lab, synthetic)


# -- found by the field matrix (tests/unit/test_field_matrix.py) ---------------------------


def test_etcd_topology_cannot_move_after_init(lab: Cluster) -> None:
    doc = lab.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["etcd"].update(topology="stacked", members=[])
    message = refusal(Cluster.model_validate(doc), Synthetic(lab).converged())
    assert ("etcd.topology: live external (kubeadm-config lists etcd.external.endpoints), spec "
            "stacked: hactl does not move a cluster's etcd between external and stacked") in message
    assert "put external back in the spec with its members" in message


def test_a_stacked_cluster_spec_made_external_is_refused() -> None:
    stacked = load_file(str(SPECS / "stacked.yaml")).cluster
    doc = stacked.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["etcd"].update(topology="external", members=[{"name": "etcd01", "address": "198.18.0.21"}])
    external = Cluster.model_validate(doc)
    observed = Synthetic(stacked).converged().observed()
    hosts = dict(observed.hosts)
    hosts["etcd01"] = Synthetic(external).hosts["etcd01"]
    with pytest.raises(PlanError) as caught:
        build_plan(external, replace(observed, hosts=hosts), now=PROBED_AT)
    assert "etcd.topology: live stacked (kubeadm runs etcd on the masters" in str(caught.value)


def test_etcd_version_other_than_the_members_run_is_refused(lab: Cluster) -> None:
    doc = lab.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["etcd"]["version"] = "3.5.15"
    message = refusal(Cluster.model_validate(doc), Synthetic(lab).converged())
    assert ("etcd.version: etcd01, etcd02, etcd03 run etcd 3.4.23, spec 3.5.15: hactl does not "
            "install or upgrade etcd") in message
    assert "put 3.4.23 back in the spec (or leave etcd.version out)" in message
    doc["etcd"].pop("version")
    plan = build_plan(Cluster.model_validate(doc), Synthetic(lab).converged().observed(), now=PROBED_AT)
    assert plan.counts() == (0, 0, 0)
