"""The order of a graph's nodes: producers before consumers, each node's
depth, and the sources upstream of each node (edges from flow.graph)."""

from __future__ import annotations

from typing import Any

from .spec import Node

__all__ = ["depths", "downstream", "main_readers", "sources_upstream", "topological"]


def main_readers(nodes: dict[str, Any], wiring: dict[str, list[Any]]) -> dict[str, list[str]]:
    """For every node, the nodes that read its output (main edges, not ports)."""
    readers: dict[str, list[str]] = {name: [] for name in nodes}
    for name, edges in wiring.items():
        for edge in edges:
            if edge.port is None:
                readers[edge.source].append(name)
    return readers


def downstream(readers: dict[str, list[str]], starts: set[str]) -> set[str]:
    """`starts` and every node their outputs reach, by `readers` (main_readers)."""
    found, todo = set(starts), list(starts)
    while todo:
        for reader in readers[todo.pop()]:
            if reader not in found:
                found.add(reader)
                todo.append(reader)
    return found


def topological(inputs: dict[str, list[str]]) -> list[str]:
    """Producers before consumers (the graph is known to be acyclic)."""
    order: list[str] = []
    done: set[str] = set()
    for name in inputs:
        stack = [(name, iter(inputs[name]))]
        while stack:
            current, pending = stack[-1]
            for nxt in pending:
                if nxt not in done and nxt in inputs:
                    stack.append((nxt, iter(inputs[nxt])))
                    break
            else:
                stack.pop()
                if current not in done:
                    done.add(current)
                    order.append(current)
    return order


def depths(wiring: dict[str, list[Any]]) -> dict[str, int]:
    """Every node's depth: 0 without inputs, else one more than its deepest input."""
    found: dict[str, int] = {}
    for name in topological({n: [e.source for e in edges] for n, edges in wiring.items()}):
        found[name] = 1 + max((found[e.source] for e in wiring[name]), default=-1)
    return found


def sources_upstream(nodes: dict[str, Node], wiring: dict[str, list[Any]]) -> dict[str, list[str]]:
    """For every node, the source nodes whose output reaches it (main edges)."""
    found: dict[str, list[str]] = {}

    def walk(name: str) -> list[str]:
        if name not in found:
            found[name] = []  # a guard; the graph is acyclic
            own = [name] if nodes[name].stages[0].kind.is_source else []
            found[name] = sorted({*own, *(s for e in wiring[name] if e.port is None for s in walk(e.source))})
        return found[name]

    for name in nodes:
        walk(name)
    return found
