"""The plan's DAG: a ``networkx.DiGraph`` of steps with a deterministic topological order.

Nodes are step ids (attribute ``step``); an edge ``a → b`` means b starts after a succeeded.
The order is :func:`networkx.lexicographical_topological_sort` keyed by (step kind order, host,
id), so the same inputs always give the same order, byte for byte. The DiGraph is made (and
networkx imported, ≈ 0.15 s of CPU) when the first step is added: a plan without changes, the
common case of a pipeline's `hactl plan`, never needs it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from hactl.plan.step import Step

if TYPE_CHECKING:
    import networkx as nx


class StepGraph:
    def __init__(self) -> None:
        self._g: nx.DiGraph | None = None

    @property
    def g(self) -> nx.DiGraph:
        if self._g is None:
            import networkx as nx

            self._g = nx.DiGraph()
        return self._g

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

    def __len__(self) -> int:
        return 0 if self._g is None else int(self._g.number_of_nodes())

    def order(self) -> list[Step]:
        if self._g is None:
            return []
        import networkx as nx

        key = {n: self.step(n).sort_key for n in self.g.nodes}
        ordered = nx.lexicographical_topological_sort(self.g, key=lambda n: key[n])
        return [self.step(n) for n in ordered]

    def depends_on(self, step_id: str) -> list[str]:
        preds = [self.step(p) for p in self.g.predecessors(step_id)]
        return [s.id for s in sorted(preds, key=lambda s: s.sort_key)]

    def edges(self) -> list[tuple[str, str]]:
        """Every edge, in plan order of the target then the source."""
        out = []
        for step in self.order():
            out += [(dep, step.id) for dep in self.depends_on(step.id)]
        return out

    def sinks(self) -> list[Step]:
        return [s for s in self.order() if self.g.out_degree(s.id) == 0]


def to_dot(graph: StepGraph, name: str = "plan") -> str:
    lines = [f'digraph "{name}" {{', "  rankdir=LR;", '  node [shape=box, fontname="sans-serif"];']
    for step in graph.order():
        label = step.title.replace('"', '\\"')
        lines.append(f'  "{step.id}" [label="{label}"];')
    for a, b in graph.edges():
        lines.append(f'  "{a}" -> "{b}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(graph: StepGraph) -> str:
    ids = {step.id: f"s{i}" for i, step in enumerate(graph.order(), 1)}
    lines = ["flowchart LR"]
    for step in graph.order():
        label = step.title.replace('"', "'")
        lines.append(f'  {ids[step.id]}["{label}"]')
    for a, b in graph.edges():
        lines.append(f"  {ids[a]} --> {ids[b]}")
    return "\n".join(lines) + "\n"
