"""Deterministic graph orderings for the compiler.

Acyclic graphs, the normal case, are ordered with the standard library's
`graphlib` (microseconds per node).  networkx costs about half a second to
import, more than a whole small build, so it is imported only when a graph
has a cycle: to find every strongly connected component and one readable
cycle in each, for the diagnostic.  A graph is given as a node list plus
(u, v) edges meaning "u before v".
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from graphlib import CycleError, TopologicalSorter
from typing import TypeVar

N = TypeVar("N", str, tuple[str, str])


def _sorter(nodes: Iterable[N], edges: Iterable[tuple[N, N]]) -> TopologicalSorter[N]:
    sorter: TopologicalSorter[N] = TopologicalSorter()
    for node in nodes:
        sorter.add(node)
    for before, after in edges:
        sorter.add(after, before)
    return sorter


def is_acyclic(nodes: Iterable[N], edges: Iterable[tuple[N, N]]) -> bool:
    try:
        _sorter(nodes, edges).prepare()
    except CycleError:
        return False
    return True


def topological_order(nodes: Sequence[N], edges: Sequence[tuple[N, N]]) -> list[N]:
    """The lexicographically smallest topological order; the graph must be acyclic."""
    sorter = _sorter(nodes, edges)
    sorter.prepare()
    ready = list(sorter.get_ready())
    heapq.heapify(ready)
    order: list[N] = []
    while ready:
        node = heapq.heappop(ready)
        order.append(node)
        sorter.done(node)
        for successor in sorter.get_ready():
            heapq.heappush(ready, successor)
    return order


def generations(nodes: Sequence[N], edges: Sequence[tuple[N, N]]) -> list[list[N]]:
    """Topological levels: each level only depends on earlier ones; each level sorted."""
    sorter = _sorter(nodes, edges)
    sorter.prepare()
    levels: list[list[N]] = []
    while sorter.is_active():
        level = sorted(sorter.get_ready())
        levels.append(level)
        sorter.done(*level)
    return levels


def cycles(nodes: Sequence[N], edges: Sequence[tuple[N, N]]) -> list[list[N]]:
    """One cycle per strongly connected component: the shortest through its smallest node."""
    if is_acyclic(nodes, edges):
        return []
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from(edges)
    found = []
    for component in nx.strongly_connected_components(graph):
        start = min(component)
        if len(component) == 1 and not graph.has_edge(start, start):
            continue
        sub = graph.subgraph(component)
        best: list[N] | None = None
        for successor in sorted(sub.successors(start)):
            back: list[N] = nx.shortest_path(sub, successor, start)
            cycle = [start, *back[:-1]]
            if best is None or (len(cycle), cycle) < (len(best), best):
                best = cycle
        assert best is not None
        found.append(best)
    return sorted(found)


def condensed_order(nodes: Sequence[N], edges: Sequence[tuple[N, N]]) -> list[N]:
    """A topological order that tolerates cycles: members of a cycle stay together, sorted.

    Used to resolve consumers before what they require when candidate
    requirements (not yet winners) form a cycle.
    """
    if is_acyclic(nodes, edges):
        return topological_order(nodes, edges)
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from(edges)
    condensed = nx.condensation(graph)
    groups: dict[int, list[N]] = {}
    for node, group in condensed.graph["mapping"].items():
        groups.setdefault(group, []).append(node)
    order: list[N] = []
    for group in nx.lexicographical_topological_sort(condensed, key=lambda g: min(groups[g])):
        order.extend(sorted(groups[group]))
    return order
