"""The diff is data: addresses, ops, before/after, reasons; a generator and a collector."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from hactl.diff import Change, Op, diff, iter_changes
from hactl.plan.synthetic import PROBED_AT, Synthetic
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.vocabulary import Intent

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lab() -> Cluster:
    return load_file(str(ROOT / "specs" / "lab.yaml")).cluster


def by_address(changes: tuple[Change, ...]) -> dict[str, Change]:
    return {c.address: c for c in changes}


def test_generator_and_collector_agree(lab: Cluster) -> None:
    obs = Synthetic(lab).observed()
    assert tuple(iter_changes(lab, obs, now=PROBED_AT)) == diff(lab, obs, now=PROBED_AT).changes


def test_fresh_hosts_every_address(lab: Cluster) -> None:
    changes = by_address(diff(lab, Synthetic(lab).observed(), now=PROBED_AT).effective())
    assert list(changes) == [
        "pki.etcd-ca", "pki.etcd[etcd01]", "pki.etcd[etcd02]", "pki.etcd[etcd03]",
        "etcd.member[etcd01]", "etcd.member[etcd02]", "etcd.member[etcd03]",
        "lb[lb01].haproxy_cfg",
        "master[master01]", "master[master02]", "master[master03]",
        "worker[worker01]", "worker[worker02]", "network",
    ]
    assert all(c.op is Op.CREATE and c.before is None for c in changes.values())
    assert changes["master[master01]"].intents == {Intent.INIT}
    assert changes["master[master02]"].intents == {Intent.JOIN}
    assert changes["etcd.member[etcd02]"].intents == {Intent.BOOTSTRAP}
    assert changes["etcd.member[etcd02]"].after == {
        "name": "etcd02", "peer_url": "https://198.18.0.22:2380", "voter": True}


def test_converged_is_all_no_op(lab: Cluster) -> None:
    d = diff(lab, Synthetic(lab).converged().observed(), now=PROBED_AT)
    assert d.effective() == ()
    assert d.counts() == (0, 0, 0)
    assert {c.op for c in d.changes} == {Op.NOOP}
    assert "lb[lb01].service" in by_address(d.changes)


def test_stopped_haproxy_is_an_update_of_the_service(lab: Cluster) -> None:
    s = Synthetic(lab).converged()
    facts = s.hosts["lb01"].haproxy
    assert facts is not None
    from dataclasses import replace

    s._set("lb01", haproxy=replace(facts, active=False))
    changes = by_address(diff(lab, s.observed(), now=PROBED_AT).effective())
    assert list(changes) == ["lb[lb01].service"]
    assert changes["lb[lb01].service"].before == {"active": False}


def test_certificate_key_reason_says_how_old_the_secret_is(lab: Cluster) -> None:
    s = Synthetic(lab).etcd().lb().init()
    s.certs_created = PROBED_AT - timedelta(minutes=100)
    change = diff(lab, s.observed(), now=PROBED_AT).get("cluster.certificate-key")
    assert change is not None and change.op is Op.UPDATE
    assert "100 min old (expires after 120 min)" in change.reason
    assert change.before == {"key": "(sensitive value)"}
    s.certs_created = PROBED_AT - timedelta(minutes=5)
    change = diff(lab, s.observed(), now=PROBED_AT).get("cluster.certificate-key")
    assert change is not None and "never read back" in change.reason


def test_etcd_env_drift_is_an_update(lab: Cluster) -> None:
    s = Synthetic(lab).converged()
    facts = s.hosts["etcd02"].etcd
    assert facts is not None
    s.etcd_facts("etcd02", env={**facts.env, "ETCD_DATA_DIR": "/srv/etcd"})
    change = diff(lab, s.observed(), now=PROBED_AT).get("etcd.member[etcd02]")
    assert change is not None and change.op is Op.UPDATE
    assert change.reason == "configuration differs: ETCD_DATA_DIR"
    assert change.intents == {Intent.RECONFIGURE}


def test_replace_counts_as_add_and_remove(lab: Cluster) -> None:
    s = Synthetic(lab).converged()
    s.etcd_facts("etcd03", active=False, data_dir_state="absent", members=None, health=None)
    d = diff(lab, s.observed(), now=PROBED_AT)
    change = d.get("etcd.member[etcd03]")
    assert change is not None and change.op is Op.REPLACE and change.actions == ["delete", "create"]
    assert d.counts() == (1, 0, 1)
    assert Op.REPLACE.symbol == "-/+"


def test_unreachable_hosts_produce_no_changes(lab: Cluster) -> None:
    d = diff(lab, Synthetic(lab).unreachable("worker01").observed(), now=PROBED_AT)
    assert d.get("worker[worker01]") is None
