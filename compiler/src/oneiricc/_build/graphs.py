"""Deterministic graph orderings for the compiler.

Acyclic graphs, the normal case, are ordered with Kahn's algorithm: one pass
over the edges, which also proves there is no cycle (`graphlib` would search
for one on every graph, acyclic or not).  networkx costs about half a second
to import, more than a whole small build, so it is imported only when a
graph has a cycle: to find every strongly connected component and one
readable cycle in each, for the diagnostic.  A graph is given as a node list
plus (u, v) edges meaning "u before v"; a node named only by an edge is a
node too, and a repeated edge counts once per repetition, as in `graphlib`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from graphlib import CycleError
from typing import TypeVar

N = TypeVar("N", int, str, tuple[str, str])


def _graph(
    nodes: Iterable[N], edges: Iterable[tuple[N, N]]
) -> tuple[dict[N, list[N]], dict[N, int]]:
    """Successors and the number of predecessors of every node."""
    successors: dict[N, list[N]] = {node: [] for node in nodes}
    for before, after in edges:
        if after not in successors:
            successors[after] = []
        successors.setdefault(before, []).append(after)
    waiting = dict.fromkeys(successors, 0)
    for following in successors.values():
        for node in following:
            waiting[node] += 1
    return successors, waiting


def _smallest_order(successors: dict[N, list[N]], waiting: dict[N, int]) -> list[N]:
    """The lexicographically smallest topological order of the nodes not in a cycle.

    Kahn's algorithm with a heap for a frontier; `waiting` is consumed.  A node
    in a cycle, or after one, never becomes ready: the order holds every node
    exactly when the graph is acyclic.
    """
    ready = [node for node, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[N] = []
    while ready:
        node = heapq.heappop(ready)
        order.append(node)
        for successor in successors[node]:
            waiting[successor] -= 1
            if not waiting[successor]:
                heapq.heappush(ready, successor)
    return order


def _acyclic_order(nodes: Iterable[N], edges: Iterable[tuple[N, N]]) -> list[N] | None:
    """`topological_order`, or None when the graph has a cycle."""
    successors, waiting = _graph(nodes, edges)
    order = _smallest_order(successors, waiting)
    return order if len(order) == len(successors) else None


def is_acyclic(nodes: Iterable[N], edges: Iterable[tuple[N, N]]) -> bool:
    return _acyclic_order(nodes, edges) is not None


def topological_order(nodes: Iterable[N], edges: Iterable[tuple[N, N]]) -> list[N]:
    """The lexicographically smallest topological order; the graph must be acyclic."""
    order = _acyclic_order(nodes, edges)
    if order is None:
        raise CycleError("nodes are in a cycle")
    return order


def generations(nodes: Iterable[N], edges: Iterable[tuple[N, N]]) -> list[list[N]]:
    """Topological levels: each level only depends on earlier ones; each level sorted."""
    successors, waiting = _graph(nodes, edges)
    level = sorted(node for node, count in waiting.items() if count == 0)
    levels: list[list[N]] = []
    placed = 0
    while level:
        levels.append(level)
        placed += len(level)
        following = []
        for node in level:
            for successor in successors[node]:
                waiting[successor] -= 1
                if not waiting[successor]:
                    following.append(successor)
        level = sorted(following)
    if placed != len(successors):
        raise CycleError("nodes are in a cycle")
    return levels


def cycles(nodes: Sequence[N], edges: Sequence[tuple[N, N]]) -> list[list[N]]:
    """One cycle per strongly connected component: the shortest through its smallest node.

    Edges may come in any order: they are sorted, so that shortest paths tie
    the same way every time, only when there is a cycle.
    """
    if is_acyclic(nodes, edges):
        return []
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from(sorted(edges))
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
    acyclic = _acyclic_order(nodes, edges)
    if acyclic is not None:
        return acyclic
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
