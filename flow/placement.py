"""Where each source of a graph runs when the graph is split into shards.

A shard runs flow's runtime on its part of the graph (its sources and what
they feed). Sources must stay together when they share something that is
exact only in one process: a rate limit shared by name (its sliding window
is an in-process limiter), or a server (its budget counts every client of
it). A stage kind says what its node must share through its `affinity`
hook: keys such as `limiter:NAME` or `host:127.0.0.1:8001`; sources whose
keys meet form one group (union-find), and a group is never split.

Groups are then spread over the shards by weight, heaviest first, each to
the lightest shard so far (LPT: the heaviest shard is at most the lightest
plus the heaviest group). A group's weight is its sources' weights (1 each,
or the pages `flow plan` predicts). Ties break by name, so a graph is
placed the same way every time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Placement:
    shards: list[list[str]]  # source nodes per shard, in graph order
    groups: list[list[str]]  # sources that must run together
    keys: dict[str, list[str]] = field(default_factory=dict)  # source -> what it shares (its affinity)
    driver: list[str] = field(default_factory=list)  # nodes that run in the driver (flow.relay)

    def shard_of(self, source: str) -> int:
        return next(i for i, members in enumerate(self.shards) if source in members)

    def describe(self) -> list[str]:
        """One line per shard: `shard 0: a, b (together: limiter:x)`."""
        lines = []
        for i, members in enumerate(self.shards):
            shared = sorted({k for m in members for k in self.keys.get(m, []) if self._shared(k)})
            note = f" (together: {', '.join(shared)})" if shared else ""
            lines.append(f"shard {i}: {', '.join(members) or '(none)'}{note}")
        if self.driver:
            lines.append(f"driver: {', '.join(self.driver)} (reports on the whole run, from the shards)")
        return lines

    def _shared(self, key: str) -> bool:
        return sum(key in keys for keys in self.keys.values()) > 1

    def to_json(self) -> dict[str, Any]:
        shared = {source: keys for source, keys in self.keys.items() if keys}
        return {"shards": self.shards, "groups": self.groups, "shared": shared, "driver": self.driver}


def sources_of(spec: Any) -> list[str]:
    """The graph's source nodes, in graph order."""
    return [name for name, node in spec.nodes.items() if node.stages[0].kind.is_source]


def affinity(spec: Any, source: str) -> list[str]:
    """What a source's node shares with others, from its stages' kinds."""
    keys: list[str] = []
    for stage in spec.nodes[source].stages:
        hook = getattr(stage.kind, "affinity", None)
        if hook is not None:
            keys += [k for k in hook(stage.params) if k not in keys]
    return keys


def place(spec: Any, shards: int, weights: Mapping[str, float] | None = None) -> Placement:
    """The graph's sources over `shards` shards (see the module doc)."""
    from .relay import driver_nodes

    sources = sources_of(spec)
    keys = {s: affinity(spec, s) for s in sources}
    return dataclasses.replace(place_groups(sources, keys, shards, weights), driver=driver_nodes(spec))


def place_groups(sources: list[str], keys: Mapping[str, list[str]], shards: int,
                 weights: Mapping[str, float] | None = None) -> Placement:  # fmt: skip
    if shards < 1:
        raise ValueError("a cluster has at least one shard")
    groups = _groups(sources, keys)
    weight: Callable[[str], float] = (lambda s: float(weights.get(s, 1.0))) if weights else (lambda s: 1.0)
    order = sorted(groups, key=lambda g: (-sum(map(weight, g)), sources.index(g[0])))
    loads = [0.0] * shards
    members: list[list[str]] = [[] for _ in range(shards)]
    for group in order:
        lightest = min(range(shards), key=lambda i: (loads[i], i))
        loads[lightest] += sum(map(weight, group))
        members[lightest] += group
    rank = {s: i for i, s in enumerate(sources)}
    placed = [sorted(m, key=rank.__getitem__) for m in members]
    return Placement(placed, groups, {s: list(keys[s]) for s in sources})


def _groups(sources: list[str], keys: Mapping[str, list[str]]) -> list[list[str]]:
    """Sources joined by any shared key (union-find), each group in graph order."""
    parent = {s: s for s in sources}

    def root(s: str) -> str:
        while parent[s] != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    owner: dict[str, str] = {}
    for source in sources:
        for key in keys.get(source, []):
            if key in owner:
                parent[root(source)] = root(owner[key])
            else:
                owner[key] = source
    grouped: dict[str, list[str]] = {}
    for source in sources:
        grouped.setdefault(root(source), []).append(source)
    return list(grouped.values())
