"""`flow replay`'s graph: the run's graph cut down to what stored dead
letters pass through again.

Dead letters are grouped by the node and stage that rejected them. A stage
kind that can take its records again declares `replay` (flow.registry):
that node then starts at that stage, fed by a source yielding the items
`replay` made. The nodes on a path of main edges (outputs, not side
outputs) from it to a *store* (a sink that adds to what earlier runs wrote:
a database) stay, and so do the stores reading their side outputs. File
sinks are left out, and the nodes that lead only to them: a replay would
rewrite a file with the replayed records alone. The rest of the graph (the
other sources, their fetches) does not run.

Dead letters that cannot be replayed stay in the store, with why: their
node or stage is no longer in the graph, their stage kind has no `replay`,
or no store is downstream of it.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from .graph import edges
from .items import DeadLetter
from .registry import Params, StageKind
from .spec import Spec, StageSpec
from .topology import downstream, main_readers


@dataclasses.dataclass
class Plan:
    spec: Spec  # the graph to run
    letters: list[DeadLetter]  # the dead letters it passes through again
    left: Counter[str]  # why the others stay in the store -> how many


def plan(spec: Spec, letters: list[DeadLetter]) -> Plan:
    """The replay of `letters` through `spec` (see the module doc)."""
    left: Counter[str] = Counter()
    groups: dict[tuple[str, str], list[DeadLetter]] = {}
    for letter in letters:
        groups.setdefault((letter.node, letter.stage), []).append(letter)
    candidates: dict[str, list[tuple[int, list[DeadLetter]]]] = {}  # node -> [(stage index, letters)]
    for (name, stage), group in groups.items():
        node = spec.nodes.get(name)
        index = next((i for i, s in enumerate(node.stages) if s.kind.name == stage), None) if node else None
        if node is None or index is None:
            left[f"the graph has no stage '{stage}' in a node '{name}'"] += len(group)
        elif node.stages[index].kind.replay is None:
            left[f"stage kind '{stage}' cannot take its records again ({name})"] += len(group)
        else:
            candidates.setdefault(name, []).append((index, group))
    starts: dict[str, tuple[int, list[DeadLetter]]] = {}  # node -> (stage index, its letters)
    for name, found in candidates.items():
        found.sort(key=lambda pair: pair[0])
        starts[name] = found[0]
        for _, group in found[1:]:  # one entry point per node and replay
            left[f"{name}: an earlier stage of the node is replayed first; replay again after"] += len(group)
    kept = _leading_to_stores(spec, set(starts))
    for name in [n for n in starts if n not in kept]:
        why = f"no database sink (sqlite, postgres) takes the output of node '{name}'"
        left[why] += len(starts.pop(name)[1])
    if not starts:
        kept = []
    nodes = {}
    for name in kept:
        node = spec.nodes[name]
        if name in starts:
            index, group = starts[name]
            source = _source(node.stages[index], group)
            nodes[name] = dataclasses.replace(node, inputs=[], stages=[source, *node.stages[index:]])
        else:
            inputs = [i for i in node.inputs if i.partition(".")[0] in kept or i.startswith("*")]
            nodes[name] = dataclasses.replace(node, inputs=inputs)
    replayed = [letter for _, group in starts.values() for letter in group]
    return Plan(dataclasses.replace(spec, nodes=nodes), replayed, left)


def _leading_to_stores(spec: Spec, starts: set[str]) -> list[str]:
    """The nodes on a path of main edges (outputs, not side outputs) from
    `starts` to a store sink: those the replayed records flow through to a
    database; and the store sinks reading a side output of those (their
    dead letters, errors, windows). In the graph's order."""
    wiring = edges(spec)
    readers = main_readers(spec.nodes, wiring)
    stores = {n for n, node in spec.nodes.items() if node.stages[-1].kind.store}
    leads = {n for n in downstream(readers, starts) if downstream(readers, {n}) & stores}
    fed = {
        name
        for name, found in wiring.items()
        if spec.nodes[name].stages[-1].kind.store and any(edge.source in leads for edge in found)
    }
    return [name for name in spec.nodes if name in leads | fed]


def _source(stage: StageSpec, letters: list[DeadLetter]) -> StageSpec:
    """A source stage yielding the items that hold these dead letters' records."""
    kind = stage.kind
    assert kind.replay is not None and kind.consumes
    items = kind.replay(letters)

    async def replayed(source: None, params: Any, ctx: Any) -> AsyncIterator[Any]:
        for item in items:
            yield item

    source = StageKind("replay", Params, replayed, None, kind.consumes[0], doc="stored dead letters")
    return StageSpec(source, Params(), stage.path)


__all__ = ["Plan", "plan"]
