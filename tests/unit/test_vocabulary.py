"""The plan's vocabulary (issue 12 §2): typed addresses whose ``str()`` is the plan's address."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest

from hactl.diff import Diff, Hints, Op
from hactl.plan.planner import build_plan
from hactl.plan.synthetic import PROBED_AT, Synthetic
from hactl.spec.load import load_file
from hactl.vocabulary import Address, Aspect, Component, Intent

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


def _matrix_diffs(monkeypatch: pytest.MonkeyPatch) -> list[Diff]:
    """Every diff the planner computes while each scenario of test_plan_matrix runs (refused
    plans too: the diff comes before the refusals)."""
    from hactl.plan import planner
    from tests.unit import test_plan_matrix as matrix

    seen: list[Diff] = []
    real = planner.diff

    def recording(*args: Any, **kwargs: Any) -> Diff:
        seen.append(real(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(planner, "diff", recording)
    lab = load_file(str(SPECS / "lab.yaml")).cluster
    tests = [f for name, f in vars(matrix).items() if name.startswith("test_") and callable(f)]
    assert len(tests) >= 30
    for test in tests:
        test(*([lab] if inspect.signature(test).parameters else []))
    return seen


def test_no_change_of_any_matrix_scenario_carries_a_mode_string(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12 §2: intents are typed; a change's hints are typed fields (``Hints``), and they
    survive a saved plan's round trip unchanged."""
    diffs = _matrix_diffs(monkeypatch)
    changes = [c for d in diffs for c in d.changes]
    assert len(diffs) >= 30 and changes
    for change in changes:
        assert isinstance(change.detail, Hints), change
        assert Hints.from_data(json.loads(json.dumps(change.detail.to_data()))) == change.detail
        assert all(isinstance(i, Intent) for i in change.intents), change
        assert Address.parse(change.address) == change.addr
    # every etcd member or node change that is planned says what it means to do
    for change in changes:
        if change.op is not Op.NOOP and change.addr.component in NEEDS_INTENT and change.addr.aspect is None:
            assert change.intents, change
    seen = {i for c in changes for i in c.intents}
    assert seen >= {Intent.BOOTSTRAP, Intent.ADD, Intent.START, Intent.PROMOTE, Intent.REMOVE,
                    Intent.REPLACE, Intent.INIT, Intent.JOIN, Intent.REJOIN}


NEEDS_INTENT = {Component.ETCD_MEMBER, Component.MASTER, Component.WORKER}


@pytest.mark.parametrize("saved, why", [
    ({"mode": "bootstrap"}, "unknown hint 'mode'"),
    ({"running": "yes"}, "running: must be bool, not str"),
    ({"data_dir_entries": True}, "data_dir_entries: must be int, not bool"),
    ({"phases": "upload-config"}, "phases: must be a list of strings"),
])
def test_a_saved_hint_of_the_wrong_kind_is_refused(saved: dict[str, Any], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Hints.from_data(saved)
