"""Issue 12 §1, hactl/plan/refusals_identity.py: on the facts of a converged cluster (Synthetic),
the kubelet client certificates the kubelet will not renew in time, API server certificates
without a name or address of the spec, and Nodes whose InternalIP is not the spec's address are
refused naming the host, the field, the live and the wanted value and what to do; a converged
cluster gives none."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from hactl.facts.model import CertDates, Observed, ServingNames
from hactl.plan import refusals_identity as identity
from hactl.plan.synthetic import PROBED_AT, Synthetic, big_cluster
from hactl.spec.load import load_file
from hactl.spec.models import Cluster

SPECS = Path(__file__).resolve().parents[2] / "specs"
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def lab() -> Cluster:
    return load_file(str(SPECS / "lab.yaml")).cluster


def edited(cluster: Cluster, edit: Any) -> Cluster:
    doc = cluster.model_dump(mode="json", by_alias=True, exclude_none=True)
    edit(doc)
    return Cluster.model_validate(doc)


def flat(messages: list[str]) -> str:
    return " ".join(" ".join(messages).split())


@pytest.mark.parametrize("spec", ["lab.yaml", "stacked.yaml", "five-etcd.yaml"])
def test_a_converged_cluster_gives_no_refusal(spec: str) -> None:
    cluster = load_file(str(SPECS / spec)).cluster
    assert identity.check(cluster, Synthetic(cluster).converged().observed()) == []


def test_the_benchmark_cluster_is_converged_too() -> None:
    cluster = big_cluster(workers=20)
    assert identity.check(cluster, Synthetic(cluster).converged().observed()) == []


# -- the kubelet client certificate ---------------------------------------------------------------


def with_kubelet_cert(cluster: Cluster, host: str, cert: CertDates, rotates: bool | None) -> Observed:
    synthetic = Synthetic(cluster).converged()
    facts = synthetic.hosts[host].kubernetes
    assert facts is not None
    synthetic._set(host, kubernetes=replace(facts, kubelet_client_cert=cert,
                                            kubelet_rotates_certificates=rotates))
    return synthetic.observed()


def year_cert(left: timedelta) -> CertDates:
    """kubeadm's one-year kubelet client certificate with ``left`` to go at the probe."""
    end = PROBED_AT + left
    return CertDates(not_after=end, not_before=end - timedelta(days=365))


def test_an_expired_kubelet_client_certificate_is_refused_with_kubeadms_manual_fix(lab: Cluster) -> None:
    observed = with_kubelet_cert(lab, "worker02", year_cert(-2 * DAY), True)
    (message,) = identity.check(lab, observed)
    text = flat([message])
    assert text.startswith("kubelet client certificates expire within certificates.renewBeforeDays "
                           "(30 days) of now and will not be renewed in time: worker02 "
                           "/var/lib/kubelet/pki/kubelet-client-current.pem expired 2025-12-30 12:00 UTC "
                           "(expired: the kubelet cannot ask for a new one with it)")
    assert "`kubeadm certs renew` does not cover this certificate" in text
    assert ("on worker02 (kubeadm's troubleshooting guide, 'Kubelet client certificate rotation "
            "fails'): move /etc/kubernetes/kubelet.conf and /var/lib/kubelet/pki/kubelet-client* "
            "aside; on a master run `kubeadm kubeconfig user --org system:nodes --client-name "
            "system:node:NODE > kubelet.conf`") in text
    assert "rotateCertificates: true" not in text  # rotation cannot fix an expired one


def test_a_kubelet_client_certificate_without_rotation_is_refused_inside_the_window(lab: Cluster) -> None:
    cert = CertDates(not_after=PROBED_AT + 20 * DAY, not_before=PROBED_AT - 10 * DAY)  # 33 % used
    text = flat(identity.check(lab, with_kubelet_cert(lab, "master02", cert, False)))
    assert ("master02 /var/lib/kubelet/pki/kubelet-client-current.pem expires 2026-01-21 12:00 UTC, "
            "in 20 days (rotation is off in /var/lib/kubelet/config.yaml: nothing renews it)") in text
    assert ("on master02: set `rotateCertificates: true` in /var/lib/kubelet/config.yaml and "
            "restart the kubelet") in text
    assert "troubleshooting guide" not in text
    text = flat(identity.check(lab, with_kubelet_cert(lab, "master02", cert, None)))
    assert "(rotateCertificates of /var/lib/kubelet/config.yaml not known (no such file, or not a boolean)" in text
    # outside the window: not a difference, rotation or not
    far = CertDates(not_after=PROBED_AT + 31 * DAY, not_before=PROBED_AT - 300 * DAY)
    assert identity.check(lab, with_kubelet_cert(lab, "master02", far, False)) == []


def test_a_rotating_kubelet_client_certificate_is_refused_only_when_rotation_is_overdue(
        lab: Cluster) -> None:
    # kubeadm's one-year certificate 20 days before its end: 95 % used, the kubelet should have
    # asked for a new one at 70-90 %: its rotation is failing
    text = flat(identity.check(lab, with_kubelet_cert(lab, "worker01", year_cert(20 * DAY), True)))
    assert ("worker01 /var/lib/kubelet/pki/kubelet-client-current.pem expires 2026-01-21 12:00 UTC, "
            "in 20 days (94% of its validity has passed: the kubelet rotates at 70-90%, so its "
            "rotation is failing)") in text
    assert "on worker01 (kubeadm's troubleshooting guide" in text
    # a short-lived certificate half-way through its life inside the window: the kubelet will
    # still rotate it on time
    short = CertDates(not_after=PROBED_AT + 5 * DAY, not_before=PROBED_AT - 5 * DAY)
    assert identity.check(lab, with_kubelet_cert(lab, "worker01", short, True)) == []
    # ... unless less than a day is left
    hours = CertDates(not_after=PROBED_AT + timedelta(hours=12), not_before=PROBED_AT - timedelta(hours=12))
    text = flat(identity.check(lab, with_kubelet_cert(lab, "worker01", hours, True)))
    assert "in 0 days (less than a day left and the kubelet has not rotated it)" in text
    # no start date: the share used is not known; only the last day counts
    no_start = CertDates(not_after=PROBED_AT + 10 * DAY)
    assert identity.check(lab, with_kubelet_cert(lab, "worker01", no_start, True)) == []


def test_the_window_is_the_spec_field(lab: Cluster) -> None:
    wide = edited(lab, lambda d: d.update(certificates={"renewBeforeDays": 400}))
    cert = year_cert(300 * DAY)  # as the Synthetic converged facts: rotation on, 18 % used
    assert identity.check(wide, with_kubelet_cert(wide, "worker01", cert, True)) == []
    text = flat(identity.check(wide, with_kubelet_cert(wide, "worker01", cert, False)))
    assert "within certificates.renewBeforeDays (400 days)" in text and "in 300 days" in text


def test_every_host_is_listed_in_one_refusal(lab: Cluster) -> None:
    synthetic = Synthetic(lab).converged()
    for name, cert, rotates in (("master01", year_cert(-DAY), True),
                                ("worker02", year_cert(3 * DAY), False)):
        facts = synthetic.hosts[name].kubernetes
        assert facts is not None
        synthetic._set(name, kubernetes=replace(facts, kubelet_client_cert=cert,
                                                kubelet_rotates_certificates=rotates))
    (message,) = identity.check(lab, synthetic.observed())
    assert message.index("master01 /var/lib") < message.index("worker02 /var/lib")
    assert "on worker02: set `rotateCertificates: true`" in message
    assert "on master01 (kubeadm's troubleshooting guide" in message


# -- the API server certificate's names ------------------------------------------------------------


def test_a_load_balancer_name_the_certificate_lacks_is_refused_on_every_master(lab: Cluster) -> None:
    observed = Synthetic(lab).converged().observed()
    changed = edited(lab, lambda d: d["loadBalancer"].update(dnsName="api.example.com",
                                                             vip="198.18.0.100"))
    messages = identity.check(changed, observed)
    assert [m.split(":")[0] for m in messages] == ["master01", "master02", "master03"]
    text = flat(messages[:1])
    assert text.startswith("master01: the API server certificate /etc/kubernetes/pki/apiserver.crt "
                           "does not carry loadBalancer.dnsName api.example.com; loadBalancer.vip "
                           "198.18.0.100 (its names: DNS master01, kubernetes, kubernetes.default, "
                           "kubernetes.default.svc, kubernetes.default.svc.cluster.local, k8s-api.lab; "
                           "IP 10.96.0.1, 198.18.0.11, 198.18.0.10)")
    assert "add api.example.com, 198.18.0.100 to apiServer.certSANs" in text
    assert "`kubeadm init phase certs apiserver --config <that file>`" in text
    assert "one master at a time" in text


def test_the_endpoint_and_the_masters_own_address(lab: Cluster) -> None:
    observed = Synthetic(lab).converged().observed()
    # controlPlaneEndpoint and loadBalancer.dnsName name the same host: said once, both fields
    changed = edited(lab, lambda d: d.update(controlPlaneEndpoint="api.example.com:6443")
                     or d["loadBalancer"].update(dnsName="api.example.com"))
    assert ("does not carry controlPlaneEndpoint and loadBalancer.dnsName api.example.com (its "
            in flat(identity.check(changed, observed)))
    # a master's address: only that master's certificate (and its Node) differ
    moved = edited(lab, lambda d: d["masters"][1].update(address="198.18.0.19"))
    messages = identity.check(moved, observed)
    assert messages[0].startswith("master02: the API server certificate "
                                  "/etc/kubernetes/pki/apiserver.crt does not carry "
                                  "masters[1].address 198.18.0.19 (its names:")
    assert not any(m.startswith(("master01:", "master03:")) for m in messages)


def test_an_unread_certificate_is_not_compared(lab: Cluster) -> None:
    synthetic = Synthetic(lab).converged()
    for name in ("master01", "master02", "master03"):
        facts = synthetic.hosts[name].kubernetes
        assert facts is not None
        synthetic._set(name, kubernetes=replace(facts, apiserver_sans=None))
    changed = edited(lab, lambda d: d["loadBalancer"].update(vip="198.18.0.100"))
    assert identity.check(changed, synthetic.observed()) == []


@pytest.mark.parametrize(("wanted", "covered"), [
    ("k8s-api.lab", True), ("K8S-API.LAB.", True), ("x.k8s-api.lab", False),
    ("a.wild.example", True), ("b.a.wild.example", False), ("wild.example", False),
    ("198.18.0.11", True), ("10.96.0.1", True), ("198.18.0.99", False),
    ("fd00::11", True), ("FD00:0:0:0:0:0:0:11", True), ("fd00::12", False),
    ("198.18.0.12", False),  # an address is checked against the IP entries only, as TLS does
])
def test_covers_matches_as_a_tls_client_does(wanted: str, covered: bool) -> None:
    names = ServingNames(("k8s-api.lab", "*.wild.example", "198.18.0.12"),
                         ("198.18.0.11", "10.96.0.1", "fd00::11"))
    assert identity.covers(names, wanted) is covered


def test_an_ipv6_cluster(lab: Cluster) -> None:
    """Spec addresses in IPv6 and a certificate read in the normal form: converged
    gives nothing, a new IPv6 vip is refused naming it."""
    def to_v6(doc: dict[str, Any]) -> None:
        for role in ("masters", "workers"):
            for i, host in enumerate(doc[role]):
                host["address"] = f"fd00::{1 if role == 'masters' else 3}{i + 1}"
        doc["loadBalancer"]["hosts"][0]["address"] = "fd00::10"
    v6 = edited(lab, to_v6)
    observed = Synthetic(v6).converged().observed()
    assert identity.check(v6, observed) == []
    changed = edited(v6, lambda d: d["loadBalancer"].update(vip="fd00::100"))
    assert "does not carry loadBalancer.vip fd00::100 (its names:" in flat(identity.check(changed, observed))


# -- the Nodes' addresses ---------------------------------------------------------------------------


def with_node(synthetic: Synthetic, name: str, ips: tuple[str, ...]) -> Observed:
    synthetic.nodes = [replace(n, internal_ips=ips) if n.name == name else n for n in synthetic.nodes]
    return synthetic.observed()


def test_a_node_on_another_address_is_refused_naming_the_field(lab: Cluster) -> None:
    observed = with_node(Synthetic(lab).converged(), "worker02", ("198.18.0.42",))
    (message,) = identity.check(lab, observed)
    assert flat([message]).startswith(
        "workers[1].address: the Node worker02 reports InternalIP 198.18.0.42, spec 198.18.0.32: "
        "the node joined the cluster with another address, and hactl does not move a node to a "
        "new address yet")
    assert "Put 198.18.0.42 back in the spec" in message and "kubectl delete node worker02" in message
    # a master's says what else holds the old address
    observed = with_node(Synthetic(lab).converged(), "master03", ("198.18.0.43",))
    assert "masters[2].address: the Node master03 reports InternalIP 198.18.0.43, spec 198.18.0.13" \
        in flat(identity.check(lab, observed))
    assert "its API server advertises the old address" in flat(identity.check(lab, observed))


def test_node_addresses_that_are_not_compared(lab: Cluster) -> None:
    # dual stack: the spec's address is one of the InternalIPs
    observed = with_node(Synthetic(lab).converged(), "worker02", ("fd00::32", "198.18.0.32"))
    assert identity.check(lab, observed) == []
    # no InternalIP reported, or a Node the API does not list
    assert identity.check(lab, with_node(Synthetic(lab).converged(), "worker02", ())) == []
    synthetic = Synthetic(lab).converged()
    synthetic.nodes = [n for n in synthetic.nodes if n.name != "worker02"]
    assert identity.check(lab, synthetic.observed()) == []
    # the API did not answer: no Node list to compare (the certificates still are)
    observed = with_node(Synthetic(lab).converged(), "worker02", ("198.18.0.42",))
    assert identity.check(lab, observed) != []
    hosts = {name: replace(h, kubernetes=replace(h.kubernetes, cluster=None))
             if h.kubernetes is not None else h for name, h in observed.hosts.items()}
    assert identity.check(lab, replace(observed, hosts=hosts)) == []
    changed = edited(lab, lambda d: d["loadBalancer"].update(vip="198.18.0.100"))
    assert len(identity.check(changed, replace(observed, hosts=hosts))) == 3  # one per master
