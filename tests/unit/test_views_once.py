"""Issue 12 §2: the cluster-wide views (the agreed etcd member list, the API's view, the
initialised master, a half-done init) are computed once per probe and shared by the diff, the
refusals and the planner (``Observed.views``)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from hactl.facts.model import Observed
from hactl.plan.planner import build_plan
from hactl.plan.synthetic import PROBED_AT, Synthetic
from hactl.spec.load import load_file
from hactl.spec.models import Cluster

SPECS = Path(__file__).resolve().parents[2] / "specs"


@pytest.fixture(scope="module")
def lab() -> Cluster:
    return load_file(str(SPECS / "lab.yaml")).cluster


def counted(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    calls: Counter[str] = Counter()
    for name in ("etcd_members", "cluster_view", "first_initialised_master", "half_initialised"):
        real = getattr(Observed, name)

        def spy(self: Observed, *args: object, _real: object = real, _name: str = name,
                **kwargs: object) -> object:
            calls[_name] += 1
            return _real(self, *args, **kwargs)  # type: ignore[operator]

        monkeypatch.setattr(Observed, name, spy)
    return calls


@pytest.mark.parametrize("state", ["fresh", "converged", "half-joined"])
def test_each_view_is_computed_once_per_plan(lab: Cluster, state: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    synthetic = Synthetic(lab)
    if state == "converged":
        synthetic.converged()
    elif state == "half-joined":
        synthetic.etcd().lb().init()
    observed = synthetic.observed()
    calls = counted(monkeypatch)
    build_plan(lab, observed, now=PROBED_AT)
    # half_initialised asks cluster_view itself once, when the views are made
    assert calls == Counter({"etcd_members": 1, "cluster_view": 2, "first_initialised_master": 1,
                             "half_initialised": 1}), calls


def test_the_views_are_the_same_object_on_every_call(lab: Cluster) -> None:
    observed = Synthetic(lab).converged().observed()
    assert observed.views(lab) is observed.views(lab)
    views = observed.views(lab)
    assert views.initialised == "master01" and views.api is not None and views.half is None
    assert views.members is not None and len(views.members) == 3


def test_no_module_derives_the_views_itself() -> None:
    """diff, refusals, planner, check and drill read ``Observed.views``; only the facts module
    (which makes the views) and the probe (which decides on a second round trip before the
    facts are final) call the derivations directly."""
    import re

    root = Path(__file__).resolve().parents[2] / "hactl"
    calls = re.compile(r"\.(etcd_members|cluster_view|first_initialised_master|half_initialised)\(")
    allowed = {root / "facts" / "model.py", root / "probe.py"}
    offenders = [f"{path.relative_to(root)}:{n}" for path in sorted(root.rglob("*.py"))
                 if path not in allowed and "lab" not in path.relative_to(root).parts
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if calls.search(line) and "kubernetes.cluster_view(" not in line]
    assert offenders == []
