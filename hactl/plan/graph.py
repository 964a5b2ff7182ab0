"""The plan's DAG of steps with a deterministic topological order.

Nodes are step ids (attribute ``step``); an edge ``a → b`` means b starts after a succeeded.
The order is networkx's ``lexicographical_topological_sort`` keyed by (step kind order, host,
id), so the same inputs always give the same order, byte for byte. The graph is a few dicts:
planning does not import networkx (~0.15 s); :attr:`StepGraph.g` builds a ``networkx.DiGraph``
for the code that wants one (the apply engine).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any, NoReturn

from hactl.plan.step import Step


def _networkx_error(kind: str, message: str) -> NoReturn:
    """Raise the networkx exception that networkx itself would raise here."""
    import networkx as nx

    raise getattr(nx, kind)(message)


class StepGraph:
    def __init__(self) -> None:
        self._nodes: dict[str, dict[str, Step]] = {}
        """step id → node attributes (``step``), in insertion order."""
        self._succ: dict[str, dict[str, None]] = {}
        self._pred: dict[str, dict[str, None]] = {}

    def _add_node(self, node: str) -> None:
        if node not in self._nodes:
            self._nodes[node] = {}
            self._succ[node] = {}
            self._pred[node] = {}

    @property
    def g(self) -> Any:
        """The graph as a new ``networkx.DiGraph`` (same nodes, attributes and edge order)."""
        import networkx as nx

        graph = nx.DiGraph()
        for node, data in self._nodes.items():
            graph.add_node(node, **data)
        graph.add_edges_from((a, b) for a, succ in self._succ.items() for b in succ)
        return graph

    def add(self, step: Step, after: Iterable[Step | None] = ()) -> Step:
        if step.id in self._nodes:
            raise ValueError(f"duplicate step id {step.id}")
        self._add_node(step.id)
        self._nodes[step.id]["step"] = step
        for dep in after:
            if dep is not None:
                self.edge(dep, step)
        return step

    def edge(self, before: Step, after: Step) -> None:
        if before.id != after.id:
            self._add_node(before.id)
            self._add_node(after.id)
            self._succ[before.id][after.id] = None
            self._pred[after.id][before.id] = None

    def step(self, step_id: str) -> Step:
        return self._nodes[step_id]["step"]

    def __len__(self) -> int:
        return len(self._nodes)

    def order(self) -> list[Step]:
        """Kahn's algorithm with a heap on (sort key, insertion index), as networkx does."""
        index = {n: i for i, n in enumerate(self._nodes)}
        key = {n: self.step(n).sort_key for n in self._nodes}
        indegree = {n: len(p) for n, p in self._pred.items() if p}
        ready = [(key[n], index[n], n) for n, p in self._pred.items() if not p]
        heapq.heapify(ready)
        ordered: list[Step] = []
        while ready:
            _, _, node = heapq.heappop(ready)
            for child in self._succ[node]:
                indegree[child] -= 1
                if indegree[child] == 0:
                    heapq.heappush(ready, (key[child], index[child], child))
                    del indegree[child]
            ordered.append(self.step(node))
        if indegree:
            _networkx_error("NetworkXUnfeasible", "Graph contains a cycle or graph changed during iteration")
        return ordered

    def depends_on(self, step_id: str) -> list[str]:
        if step_id not in self._pred:
            _networkx_error("NetworkXError", f"The node {step_id} is not in the digraph.")
        preds = [self.step(p) for p in self._pred[step_id]]
        return [s.id for s in sorted(preds, key=lambda s: s.sort_key)]

    def edges(self) -> list[tuple[str, str]]:
        """Every edge, in plan order of the target then the source."""
        out = []
        for step in self.order():
            out += [(dep, step.id) for dep in self.depends_on(step.id)]
        return out

    def sinks(self) -> list[Step]:
        return [s for s in self.order() if not self._succ[s.id]]


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
