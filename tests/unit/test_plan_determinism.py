"""Plans are deterministic (byte-identical output) and planning a 1,000-host spec is pure and
fast (timed by bench/, not here)."""

from __future__ import annotations

import itertools
from pathlib import Path

from hactl.facts.model import Observed
from hactl.plan import output, planfile
from hactl.plan.graph import to_dot, to_mermaid
from hactl.plan.planner import build_plan
from hactl.plan.synthetic import PROBED_AT, Synthetic, big_cluster
from hactl.spec.load import load_file

SPECS = Path(__file__).resolve().parents[2] / "specs"


def test_same_inputs_give_byte_identical_output() -> None:
    lab = load_file(str(SPECS / "lab.yaml")).cluster
    a = build_plan(lab, Synthetic(lab).etcd().observed(), now=PROBED_AT)
    # the same facts, hosts inserted in the reverse order
    obs = Synthetic(lab).etcd().observed()
    reversed_obs = Observed(dict(reversed(list(obs.hosts.items()))), obs.probed_at)
    b = build_plan(lab, reversed_obs, now=PROBED_AT)
    assert output.render_text(a) == output.render_text(b)
    assert output.render_json(a) == output.render_json(b)
    assert output.render_markdown(a) == output.render_markdown(b)
    assert planfile.dumps(a) == planfile.dumps(b)
    assert to_dot(a.graph) == to_dot(b.graph)
    assert to_mermaid(a.graph) == to_mermaid(b.graph)


def test_large_spec_plans_purely() -> None:
    cluster = big_cluster()
    assert len(cluster.all_hosts()) == 1000
    observed = Synthetic(cluster).etcd().lb().init().observed()
    plan = build_plan(cluster, observed, now=PROBED_AT)
    steps = plan.steps()
    assert len(steps) == 2 + 8 + 984 + 1  # token + key, 8 CP joins, workers, verify
    cp = [s.id for s in steps if s.kind == "join_control_plane"]
    assert [e for e in plan.graph.edges() if e[1] in cp[1:]] == list(itertools.pairwise(cp))
    assert output.summary_line(plan) == "Plan: 993 to add, 1 to change, 0 to remove."


def test_large_converged_spec_has_no_changes() -> None:
    cluster = big_cluster(200)
    plan = build_plan(cluster, Synthetic(cluster).converged().observed(), now=PROBED_AT)
    assert output.render_text(plan).endswith("No changes. The cluster matches the spec.\n")
