"""StepGraph keeps its DAG in plain dicts (planning does not import networkx): it must answer
exactly what the networkx-backed version answered, order included."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hactl.plan.graph import StepGraph, to_dot, to_mermaid
from hactl.plan.step import Step


class NxStepGraph:
    """The networkx implementation StepGraph replaced (reference)."""

    def __init__(self) -> None:
        self.g: nx.DiGraph = nx.DiGraph()

    def add(self, step: Step, after: Iterable[Step | None] = ()) -> Step:
        if step.id in self.g:
            raise ValueError(f"duplicate step id {step.id}")
        self.g.add_node(step.id, step=step)
        for dep in after:
            if dep is not None:
                self.edge(dep, step)
        return step

    def edge(self, before: Step, after: Step) -> None:
        if before.id != after.id:
            self.g.add_edge(before.id, after.id)

    def step(self, step_id: str) -> Step:
        step: Step = self.g.nodes[step_id]["step"]
        return step

    def order(self) -> list[Step]:
        key = {n: self.step(n).sort_key for n in self.g.nodes}
        ordered = nx.lexicographical_topological_sort(self.g, key=lambda n: key[n])
        return [self.step(n) for n in ordered]

    def depends_on(self, step_id: str) -> list[str]:
        preds = [self.step(p) for p in self.g.predecessors(step_id)]
        return [s.id for s in sorted(preds, key=lambda s: s.sort_key)]

    def edges(self) -> list[tuple[str, str]]:
        out = []
        for step in self.order():
            out += [(dep, step.id) for dep in self.depends_on(step.id)]
        return out

    def sinks(self) -> list[Step]:
        return [s for s in self.order() if self.g.out_degree(s.id) == 0]


@dataclass(frozen=True)
class Early(Step):
    kind: ClassVar[str] = "unit-graph-early"
    order: ClassVar[int] = 10


@dataclass(frozen=True)
class Late(Step):
    kind: ClassVar[str] = "unit-graph-late"
    order: ClassVar[int] = 90


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[Step], list[tuple[int, int]]]:
    n = draw(st.integers(1, 18))
    ids = draw(st.lists(st.text("abcxyz.[]", min_size=1, max_size=4), min_size=n, max_size=n, unique=True))
    steps: list[Step] = []
    for step_id in ids:
        cls = draw(st.sampled_from([Early, Late]))
        host = draw(st.sampled_from([None, "etcd01", "lb01", "master01"]))
        steps.append(cls(step_id, host, f"Do {step_id}", "r"))
    pairs = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=3 * n))
    return steps, [(a, b) for a, b in pairs if a < b] + [(a, a) for a, b in pairs if a == b]


@settings(max_examples=300, deadline=None)
@given(dags())
def test_same_answers_as_the_networkx_version(dag: tuple[list[Step], list[tuple[int, int]]]) -> None:
    steps, pairs = dag
    ours, ref = StepGraph(), NxStepGraph()
    for i, step in enumerate(steps):
        deps = [steps[a] for a, b in pairs if b == i and a < i]
        ours.add(step, [None, *deps])
        ref.add(step, [None, *deps])
    for a, b in pairs:  # late edges too (planfile.loads adds edges after the nodes)
        ours.edge(steps[a], steps[b])
        ref.edge(steps[a], steps[b])
    assert len(ours) == ref.g.number_of_nodes()
    assert ours.order() == ref.order()
    assert ours.edges() == ref.edges()
    assert ours.sinks() == ref.sinks()
    for step in steps:
        assert ours.depends_on(step.id) == ref.depends_on(step.id)
        assert ours.step(step.id) is ref.step(step.id)
    assert list(ours.g.nodes(data=True)) == list(ref.g.nodes(data=True))
    assert list(ours.g.edges) == list(ref.g.edges)
    assert to_dot(ours) == _to_dot(ref) and to_mermaid(ours).startswith("flowchart LR")


def _to_dot(graph: NxStepGraph) -> str:
    lines = ['digraph "plan" {', "  rankdir=LR;", '  node [shape=box, fontname="sans-serif"];']
    for step in graph.order():
        label = step.title.replace('"', '\\"')
        lines.append(f'  "{step.id}" [label="{label}"];')
    for a, b in graph.edges():
        lines.append(f'  "{a}" -> "{b}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def test_same_errors_as_the_networkx_version() -> None:
    a, b = Early("a", None, "A", "r"), Late("b", None, "B", "r")
    for graph in (StepGraph(), NxStepGraph()):
        graph.add(a)
        graph.add(b, [a])
        with pytest.raises(ValueError, match="duplicate step id a"):
            graph.add(a)
        graph.edge(b, a)
        with pytest.raises(nx.NetworkXUnfeasible, match="Graph contains a cycle"):
            graph.order()
        with pytest.raises(nx.NetworkXError, match=r"The node c is not in the digraph\."):
            graph.depends_on("c")
        with pytest.raises(KeyError):
            graph.step("c")
