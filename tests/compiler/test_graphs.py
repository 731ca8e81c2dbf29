"""The compiler's graph orderings, against definitions checked by brute force.

Plans (activation order, workflow generations, the resolution order) depend on
these orders byte for byte, so each is held to what it promises on every small
graph hypothesis makes: the smallest topological order among all of them, the
levels of the longest path, one shortest cycle per strongly connected
component, cycles kept together.
"""

from __future__ import annotations

import itertools
from graphlib import CycleError

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oneiricc._build import graphs

Graph = tuple[list[int], list[tuple[int, int]]]


@st.composite
def small_graphs(draw: st.DrawFn, acyclic: bool) -> Graph:
    size = draw(st.integers(min_value=0, max_value=6))
    nodes = draw(st.permutations(list(range(size))))
    pairs = [(a, b) for a in range(size) for b in range(size) if not acyclic or a < b]
    edges = draw(st.lists(st.sampled_from(pairs), max_size=12) if pairs else st.just([]))
    if acyclic:  # relabel, so that "u before v" is not simply u < v
        relabel = draw(st.permutations(list(range(size))))
        edges = [(relabel[a], relabel[b]) for a, b in edges]
    return nodes, edges


def valid_orders(nodes: list[int], edges: list[tuple[int, int]]) -> list[tuple[int, ...]]:
    return [
        order
        for order in itertools.permutations(sorted(nodes))
        if all(order.index(a) < order.index(b) for a, b in edges)
    ]


def digraph(graph: Graph) -> nx.DiGraph:
    reference = nx.DiGraph()
    reference.add_nodes_from(graph[0])
    reference.add_edges_from(graph[1])
    return reference


@settings(max_examples=300, deadline=None)
@given(small_graphs(acyclic=True))
def test_topological_order_is_the_smallest_of_all(graph: Graph) -> None:
    nodes, edges = graph
    assert tuple(graphs.topological_order(nodes, edges)) == min(valid_orders(nodes, edges))
    assert graphs.is_acyclic(nodes, edges)
    assert graphs.cycles(nodes, edges) == []


@settings(max_examples=300, deadline=None)
@given(small_graphs(acyclic=True))
def test_generations_are_longest_path_levels(graph: Graph) -> None:
    nodes, edges = graph
    depth: dict[int, int] = {}
    for node in graphs.topological_order(nodes, edges):
        depth[node] = max((depth[a] + 1 for a, b in edges if b == node), default=0)
    expected = [
        sorted(n for n in nodes if depth[n] == level) for level in range(len(set(depth.values())))
    ]
    assert graphs.generations(nodes, edges) == expected


@settings(max_examples=300, deadline=None)
@given(small_graphs(acyclic=False))
def test_cycles_one_shortest_per_component_through_its_smallest_node(graph: Graph) -> None:
    nodes, edges = graph
    reference = digraph(graph)
    components = [
        c
        for c in nx.strongly_connected_components(reference)
        if len(c) > 1 or reference.has_edge(next(iter(c)), next(iter(c)))
    ]
    found = graphs.cycles(nodes, edges)
    assert graphs.is_acyclic(nodes, edges) == (not components)
    assert len(found) == len(components)
    for cycle in found:
        component = next(c for c in components if cycle[0] in c)
        assert cycle[0] == min(component)
        assert all(
            reference.has_edge(a, b) for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True)
        )
        shortest = min(
            len(nx.shortest_path(reference.subgraph(component), s, cycle[0]))
            for s in reference.subgraph(component).successors(cycle[0])
        )
        assert len(cycle) == shortest
    if components:
        with pytest.raises(CycleError):
            graphs.topological_order(nodes, edges)


@settings(max_examples=300, deadline=None)
@given(small_graphs(acyclic=False))
def test_condensed_order_keeps_cycles_together_and_every_other_edge(graph: Graph) -> None:
    nodes, edges = graph
    reference = digraph(graph)
    component = nx.condensation(reference).graph["mapping"]
    order = graphs.condensed_order(nodes, edges)
    assert sorted(order) == sorted(nodes)
    position = {node: index for index, node in enumerate(order)}
    for a, b in edges:
        if component[a] != component[b]:
            assert position[a] < position[b]
    for members in nx.strongly_connected_components(reference):
        places = sorted(position[n] for n in members)
        assert places == list(range(places[0], places[0] + len(places)))
