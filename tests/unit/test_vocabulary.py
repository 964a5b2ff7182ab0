"""The plan's vocabulary (issue 12 §2): typed addresses whose ``str()`` is the plan's address."""

from __future__ import annotations

from pathlib import Path

import pytest

from hactl.plan.planner import build_plan
from hactl.plan.synthetic import PROBED_AT, Synthetic
from hactl.spec.load import load_file
from hactl.vocabulary import Address, Aspect, Component

SPECS = Path(__file__).resolve().parents[2] / "specs"


@pytest.mark.parametrize(("address", "text"), [
    (Address(Component.PKI_ETCD_CA), "pki.etcd-ca"),
    (Address(Component.PKI_ETCD, "etcd02"), "pki.etcd[etcd02]"),
    (Address(Component.ETCD_MEMBER, "etcd02"), "etcd.member[etcd02]"),
    (Address(Component.LB, "lb01", Aspect.HAPROXY_CFG), "lb[lb01].haproxy_cfg"),
    (Address(Component.LB, "lb01", Aspect.SERVICE), "lb[lb01].service"),
    (Address(Component.MASTER, "master01"), "master[master01]"),
    (Address(Component.MASTER, "master01", Aspect.KUBELET), "master[master01].kubelet"),
    (Address(Component.WORKER, "worker01"), "worker[worker01]"),
    (Address(Component.CLUSTER, aspect=Aspect.BOOTSTRAP_TOKEN), "cluster.bootstrap-token"),
    (Address(Component.CLUSTER, aspect=Aspect.CERTIFICATE_KEY), "cluster.certificate-key"),
])
def test_address_prints_as_the_plan_address_and_reads_back(address: Address, text: str) -> None:
    assert str(address) == text
    assert Address.parse(text) == address


@pytest.mark.parametrize("text", ["", "x[a]", "lb[lb01].nothing", "etcd.member[]", "pki.etcdx",
                                  "master[m01", "worker[w1]extra"])
def test_what_is_no_address_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a plan address"):
        Address.parse(text)


def test_the_bring_up_addresses_round_trip() -> None:
    lab = load_file(str(SPECS / "lab.yaml")).cluster
    plan = build_plan(lab, Synthetic(lab).observed(), now=PROBED_AT)
    assert plan.diff.changes
    for change in plan.diff.changes:
        assert Address.parse(change.address) == change.addr
        if change.addr.component is not Component.CLUSTER:
            assert change.addr.host == change.host
