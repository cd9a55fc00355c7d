"""The graph checks that run before anything starts, and drawing the graph.

`check(spec)` returns located problems (errors and warnings) for:

- inputs: `from:` entries that are not nodes (with a did-you-mean) or not
  ports of their node (`shop_a.windows` without a window stage), a node
  reading from itself, a source given inputs, a node without inputs that
  does not start with a source, several inputs without a fan-in stage first;
- stage order: sources only first, sinks only last;
- item kinds (classes): each stage consumes, by subclass, every kind that
  can reach it, across edges and side outputs too (`normalize` after
  `sequence` is an error naming both); page requests, whose planner waits
  for their answers, never end unanswered (in a generic sink, or at the end
  of the graph);
- cycles, named node by node, side outputs included;
- a node that ends in a sink but has readers; nodes whose output reaches no
  sink (a warning: their items are dropped at the end of the graph).

A `from:` entry is `NODE` (its output), `NODE.PORT` (a side output:
`errors`, `dead_letters`, or a port its stages declare, e.g. `windows`) or
`*.PORT` (see `edges`).
"""

from __future__ import annotations

import difflib
from typing import Any, NamedTuple

from ._yaml import Path
from .items import PORTS
from .registry import Kinds, kind_names
from .spec import Node, Problem, Spec
from .topology import downstream, main_readers, topological

WILDCARD = "*"


class Edge(NamedTuple):
    """One input of a node: `source`'s output, or its side output `port`."""

    source: str
    port: str | None
    at: Path  # the `from:` entry, for messages

    def __str__(self) -> str:
        return self.source if self.port is None else f"{self.source}.{self.port}"


def ports(node: Node) -> dict[str, type]:
    """A node's side outputs and their item kinds: the built-in errors and
    dead_letters, plus those its stage kinds declare."""
    out = dict(PORTS)
    for stage in node.stages:
        out.update(stage.kind.outputs)
    return out


def edges(spec: Spec) -> dict[str, list[Edge]]:
    """Every node's inputs, `*.PORT` expanded to that port of every node that
    is neither a wildcard reader nor downstream of one (explicit edges
    followed). Wildcard edges thus only run from the part of the graph no
    wildcard reader reaches into a wildcard reader, so they never close a
    cycle. A wildcard adds only what the node does not read already; one
    that matches nothing stays as an Edge from "*", and names that are not
    nodes stay too, for `check` to report."""
    nodes = spec.nodes
    explicit: dict[str, list[Edge]] = {}
    wildcards: dict[str, list[Edge]] = {}
    for name, node in nodes.items():
        from_path: Path = (*node.path, "from")
        for i, text in enumerate(node.inputs):
            at = (*from_path, i) if len(node.inputs) > 1 else from_path
            source, dot, port = text.partition(".")
            edge = Edge(source, port if dot else None, at)
            (wildcards if source == WILDCARD else explicit).setdefault(name, []).append(edge)
    out = {name: list(explicit.get(name, [])) for name in nodes}
    fenced = set(wildcards).union(*(_downstream(name, explicit) for name in wildcards))
    for name, found in wildcards.items():
        for edge in found:
            have = {(e.source, e.port) for e in out[name]}
            matched = [
                Edge(other, edge.port, edge.at)
                for other, node in nodes.items()
                if other not in fenced and edge.port in ports(node) and (other, edge.port) not in have
            ]
            out[name] += matched or [edge]
    return out


def _downstream(name: str, explicit: dict[str, list[Edge]]) -> set[str]:
    readers: dict[str, set[str]] = {}
    for reader, found in explicit.items():
        for edge in found:
            readers.setdefault(edge.source, set()).add(reader)
    seen: set[str] = set()
    todo = [name]
    while todo:
        for reader in readers.get(todo.pop(), ()):
            if reader not in seen:
                seen.add(reader)
                todo.append(reader)
    return seen


def output_kind(node: Node, given: Kinds | None) -> Kinds | None:
    kind = given
    for stage in node.stages:
        kind = stage.kind.output(kind)
    return kind


def _cycle(inputs: dict[str, list[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None. Iterative DFS, three colours."""
    colour = dict.fromkeys(inputs, 0)  # 0 unseen, 1 on the stack, 2 done
    for start in inputs:
        if colour[start]:
            continue
        stack: list[tuple[str, int]] = [(start, 0)]
        trail: list[str] = []
        while stack:
            name, i = stack.pop()
            if i == 0:
                colour[name] = 1
                trail.append(name)
            # Self-reads are reported on their own, not as a cycle.
            sources = [n for n in inputs[name] if n in inputs and n != name]
            if i < len(sources):
                stack.append((name, i + 1))
                nxt = sources[i]
                if colour[nxt] == 1:
                    cycle = [*trail[trail.index(nxt) :], nxt]
                    return cycle[::-1]  # data-flow order: producer -> consumer
                if colour[nxt] == 0:
                    stack.append((nxt, 0))
            else:
                colour[name] = 2
                trail.pop()
    return None


def check(spec: Spec) -> list[Problem]:
    """Every problem of a decoded graph (see the module doc)."""
    nodes = spec.nodes
    wiring = edges(spec)
    problems = _inputs(spec, wiring) + _shapes(spec, wiring)
    cycle = _cycle({name: [e.source for e in found] for name, found in wiring.items()})
    if cycle:
        problems.append(
            Problem(
                (*nodes[cycle[-1]].path, "from"),
                "cycle: " + " -> ".join(cycle),
                "a graph must not feed a node's output back into it",
            )
        )
    if any(not p.warning for p in problems):
        return problems  # the kinds are checked on a well-formed graph only
    return problems + _kinds(spec, wiring) + _kind_checks(spec)


def _kind_checks(spec: Spec) -> list[Problem]:
    """Each kind's own check over all its uses in the graph."""
    uses: dict[Any, list[tuple[str, Any]]] = {}  # a kind's check -> its uses
    for name, node in spec.nodes.items():
        for stage in node.stages:
            if stage.kind.check is not None:
                uses.setdefault(stage.kind.check, []).append((name, stage))
    return [problem for check, found in uses.items() for problem in check(found)]


def _inputs(spec: Spec, wiring: dict[str, list[Edge]]) -> list[Problem]:
    """`from:` entries: nodes that exist, ports they have, no self-reads,
    nothing read twice, wildcards that match."""
    nodes, problems = spec.nodes, []
    for name, found in wiring.items():
        seen: set[tuple[str, str | None]] = set()
        for edge in found:
            if (edge.source, edge.port) in seen:
                problems.append(Problem(edge.at, f"node '{name}' reads '{edge}' twice",
                                        "each item would arrive twice; list it once"))  # fmt: skip
            seen.add((edge.source, edge.port))
            if edge.source == WILDCARD:
                problems.append(_unmatched(spec, name, edge))
            elif edge.source == name:
                problems.append(Problem(edge.at, f"node '{name}' reads from itself"))
            elif edge.source not in nodes:
                close = difflib.get_close_matches(edge.source, list(nodes), n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"nodes are: {', '.join(nodes)}"
                problems.append(
                    Problem(edge.at, f"node '{name}' reads from '{edge.source}', which is not a node", hint)
                )
            elif edge.port is not None and edge.port not in ports(nodes[edge.source]):
                have = ", ".join(f"{edge.source}.{p}" for p in ports(nodes[edge.source]))
                problems.append(
                    Problem(
                        edge.at, f"node '{edge.source}' has no side output '{edge.port}'", f"it has {have}"
                    )
                )
    return problems


def _unmatched(spec: Spec, name: str, edge: Edge) -> Problem:
    offered = sorted({port for node in spec.nodes.values() for port in ports(node)})
    message = f"'{edge}' matches no node"
    if edge.port not in offered:
        return Problem(edge.at, f"{message}: no node has a side output '{edge.port}'",
                       f"side outputs here: {', '.join(offered)}")  # fmt: skip
    return Problem(edge.at, f"{message} that node '{name}' may read",
                   "a wildcard reads the nodes upstream of every wildcard reader")  # fmt: skip


def _shapes(spec: Spec, wiring: dict[str, list[Edge]]) -> list[Problem]:
    """Sources first, sinks last, fan-in where several inputs meet."""
    problems = []
    for name, node in spec.nodes.items():
        from_path: Path = (*node.path, "from")
        first, inputs = node.stages[0], wiring[name]
        if not node.inputs and node.has_buffer:
            problems.append(Problem((*node.path, "buffer"), f"node '{name}' has no inputs, so its 'buffer' "
                                    "has no effect", "set the buffer on the nodes that read from it",
                                    key=True, warning=True))  # fmt: skip
        if first.kind.is_source and node.inputs:
            problems.append(
                Problem(
                    from_path,
                    f"node '{name}' starts with source '{first.kind.name}' but is given inputs",
                    "drop 'from:' or start the pipe with another stage",
                    key=True,
                )
            )
        if not first.kind.is_source and not node.inputs:
            problems.append(
                Problem(
                    first.path,
                    f"node '{name}' has no 'from:' and its first stage '{first.kind.name}' is not a source",
                    "add 'from: NODE' or start the pipe with a source",
                )
            )
        if len(inputs) > 1 and not first.kind.fan_in:
            problems.append(
                Problem(
                    first.path,
                    f"node '{name}' reads from {len(inputs)} outputs, so its "
                    f"pipe must start with a fan-in stage, not '{first.kind.name}'",
                    "start the pipe with 'merge'",
                )
            )
        for before, after in zip(node.stages, node.stages[1:], strict=False):
            if after.kind.is_source:
                problems.append(Problem(after.path, f"source '{after.kind.name}' can only start a pipe"))
            if before.kind.is_sink:
                problems.append(
                    Problem(
                        after.path,
                        f"'{after.kind.name}' follows sink '{before.kind.name}', which passes nothing on",
                        "a sink ends its pipe",
                    )
                )
    return problems


def _kinds(spec: Spec, wiring: dict[str, list[Edge]]) -> list[Problem]:
    """Item kinds in data-flow order: each stage consumes what reaches it, by
    subclass; requests that await an answer never end in a generic sink."""
    nodes, problems = spec.nodes, []
    out: dict[str, Kinds | None] = {}
    readers = main_readers(nodes, wiring)
    for name, given in stage_inputs(spec, wiring).items():
        node = nodes[name]
        previous = f"'{wiring[name][0]}'" if len(wiring[name]) == 1 else "its inputs"
        for stage, kind in zip(node.stages, given, strict=True):
            if not stage.kind.is_source:
                problems += _consumes(stage, kind, previous)
            previous = f"'{stage.kind.name}'"
        out[name] = kind = node.stages[-1].kind.output(given[-1])
        if kind is None and readers[name]:
            problems.append(
                Problem(
                    (*node.path, "pipe"),
                    f"node '{name}' ends in sink "
                    f"'{node.stages[-1].kind.name}' but {', '.join(map(repr, readers[name]))} "
                    "read from it",
                )
            )
        unanswered = [k for k in kind or () if getattr(k, "needs_answer", False)]
        if unanswered and not readers[name]:
            problems.append(
                Problem(
                    (*node.path, "pipe"),
                    f"node '{name}' ends with {kind_names(tuple(unanswered))} that nothing answers; "
                    "their planner would wait for the answers until the deadline",
                    f"add a '{unanswered[0].needs_answer}' stage, here or in a node reading from it",
                )
            )
    for name, node in nodes.items():
        if out.get(name) is not None and not _reaches_sink(name, nodes, readers):
            problems.append(
                Problem(
                    node.path,
                    f"node '{name}' reaches no sink; its items are dropped",
                    "add a sink such as 'collect' downstream",
                    key=True,
                    warning=True,
                )
            )
    return problems


def stage_inputs(spec: Spec, wiring: dict[str, list[Edge]]) -> dict[str, list[Kinds | None]]:
    """For every node, in data-flow order, the item kinds that can reach each
    of its stages (fan-ins and side outputs make unions)."""
    nodes = spec.nodes
    out: dict[str, Kinds | None] = {}
    found: dict[str, list[Kinds | None]] = {}
    for name in topological({n: [e.source for e in edges] for n, edges in wiring.items()}):
        kind: Kinds | None = None
        if wiring[name]:
            arriving = [(ports(nodes[e.source])[e.port],) if e.port else out[e.source] for e in wiring[name]]
            kind = tuple(dict.fromkeys(k for kinds in arriving for k in kinds or ()))
        found[name] = []
        for stage in nodes[name].stages:
            found[name].append(kind)
            kind = stage.kind.output(kind)
        out[name] = kind
    return found


def _consumes(stage: Any, given: Kinds | None, previous: str) -> list[Problem]:
    rejected = stage.kind.rejects(given)
    if rejected:
        return [
            Problem(
                stage.path,
                f"stage '{stage.kind.name}' consumes {kind_names(stage.kind.consumes)} "
                f"but {previous} before it produces {kind_names(given)}",
                f"'{stage.kind.name}' cannot take {kind_names(tuple(rejected))}",
            )
        ]
    dropped = [k for k in given or () if getattr(k, "needs_answer", False) and stage.kind.drops(k)]
    if dropped:
        return [
            Problem(
                stage.path,
                f"stage '{stage.kind.name}' would drop {kind_names(tuple(dropped))}, "
                "whose planner waits for their answers",
                f"answer them first: put a '{dropped[0].needs_answer}' stage before it",
            )
        ]
    return []


def _reaches_sink(name: str, nodes: dict[str, Node], readers: dict[str, list[str]]) -> bool:
    return any(nodes[n].stages[-1].kind.is_sink for n in downstream(readers, {name}))
