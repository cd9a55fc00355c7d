"""The graph checks that run before anything starts, and drawing the graph.

`check(spec)` returns located problems (errors and warnings) for:

- inputs: `from:` names that are not nodes (with a did-you-mean), a node
  reading from itself, a source given inputs, a node without inputs that does
  not start with a source, several inputs without a fan-in stage first;
- stage order: sources only first, sinks only last;
- item kinds: each stage consumes what the one before produces, across edges
  too, and the inputs of a fan-in agree (`parse` after `normalize` is an
  error naming both);
- cycles, named node by node;
- a node that ends in a sink but has readers; nodes whose output reaches no
  sink (a warning: their items are dropped at the end of the graph).
"""

from __future__ import annotations

import difflib

from ._yaml import Path
from .spec import Node, Problem, Spec


def _kind(k: str | None) -> str:
    return "nothing" if k is None else k


def output_kind(node: Node, given: str | None) -> str | None:
    kind = given
    for stage in node.stages:
        kind = stage.kind.output(kind)
    return kind


def _cycle(nodes: dict[str, Node]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None. Iterative DFS, three colours."""
    colour = dict.fromkeys(nodes, 0)  # 0 unseen, 1 on the stack, 2 done
    for start in nodes:
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
            readers = [n for n in nodes[name].inputs if n in nodes and n != name]
            if i < len(readers):
                stack.append((name, i + 1))
                nxt = readers[i]
                if colour[nxt] == 1:
                    cycle = [*trail[trail.index(nxt) :], nxt]
                    return cycle[::-1]  # data-flow order: producer -> consumer
                if colour[nxt] == 0:
                    stack.append((nxt, 0))
            else:
                colour[name] = 2
                trail.pop()
    return None


def topological(nodes: dict[str, Node]) -> list[str]:
    """Producers before consumers (the graph is known to be acyclic)."""
    order: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        stack = [(name, iter(nodes[name].inputs))]
        while stack:
            current, inputs = stack[-1]
            for nxt in inputs:
                if nxt not in done and nxt in nodes:
                    stack.append((nxt, iter(nodes[nxt].inputs)))
                    break
            else:
                stack.pop()
                if current not in done:
                    done.add(current)
                    order.append(current)

    for name in nodes:
        if name not in done:
            visit(name)
    return order


def check(spec: Spec) -> list[Problem]:
    nodes = spec.nodes
    problems: list[Problem] = []
    readers: dict[str, list[str]] = {name: [] for name in nodes}
    for name, node in nodes.items():
        from_path: Path = (*node.path, "from")
        for i, source in enumerate(node.inputs):
            at = (*from_path, i) if len(node.inputs) > 1 else from_path
            if source == name:
                problems.append(Problem(at, f"node '{name}' reads from itself"))
            elif source not in nodes:
                close = difflib.get_close_matches(source, list(nodes), n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"nodes are: {', '.join(nodes)}"
                problems.append(
                    Problem(at, f"node '{name}' reads from '{source}', which is not a node", hint)
                )
            else:
                readers[source].append(name)
        first = node.stages[0]
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
        if len(node.inputs) > 1 and not first.kind.fan_in:
            problems.append(
                Problem(
                    first.path,
                    f"node '{name}' reads from {len(node.inputs)} nodes, so its "
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
    cycle = _cycle(nodes)
    if cycle:
        problems.append(
            Problem(
                (*nodes[cycle[-1]].path, "from"),
                "cycle: " + " -> ".join(cycle),
                "a graph must not feed a node's output back into it",
            )
        )
    if problems:
        return problems
    # Item kinds, in data-flow order, now that every input exists.
    out: dict[str, str | None] = {}
    for name in topological(nodes):
        node = nodes[name]
        given = {out[i] for i in node.inputs}
        if len(given) > 1:
            kinds = ", ".join(f"'{i}' gives {_kind(out[i])}" for i in node.inputs)
            problems.append(
                Problem((*node.path, "from"), f"node '{name}' merges inputs of different kinds: {kinds}")
            )
        kind = next(iter(given)) if len(given) == 1 else None
        previous = f"node '{node.inputs[0]}'" if node.inputs else None
        for stage in node.stages:
            if not stage.kind.is_source and not stage.kind.accepts(kind):
                problems.append(
                    Problem(
                        stage.path,
                        f"stage '{stage.kind.name}' consumes {stage.kind.consumes} "
                        f"but {previous} before it produces {_kind(kind)}",
                    )
                )
            kind = stage.kind.output(kind)
            previous = f"'{stage.kind.name}'"
        out[name] = kind
        if kind is None and readers[name]:
            problems.append(
                Problem(
                    (*node.path, "pipe"),
                    f"node '{name}' ends in sink "
                    f"'{node.stages[-1].kind.name}' but {', '.join(map(repr, readers[name]))} "
                    "read from it",
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


def _reaches_sink(name: str, nodes: dict[str, Node], readers: dict[str, list[str]]) -> bool:
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if nodes[current].stages[-1].kind.is_sink:
            return True
        for reader in readers[current]:
            if reader not in seen:
                seen.add(reader)
                todo.append(reader)
    return False


def to_mermaid(spec: Spec) -> str:
    lines = ["flowchart LR"]
    for name, node in spec.nodes.items():
        chain = " → ".join(s.kind.name for s in node.stages)
        lines.append(f'    {name}["{name}<br/>{chain}"]')
    for name, node in spec.nodes.items():
        for source in node.inputs:
            lines.append(f"    {source} -- {node.buffer} --> {name}")
    return "\n".join(lines) + "\n"


def to_dot(spec: Spec) -> str:
    lines = ["digraph flow {", "    rankdir=LR;", "    node [shape=box];"]
    for name, node in spec.nodes.items():
        chain = " → ".join(s.kind.name for s in node.stages)
        lines.append(f'    "{name}" [label="{name}\\n{chain}"];')
    for name, node in spec.nodes.items():
        for source in node.inputs:
            lines.append(f'    "{source}" -> "{name}" [label="{node.buffer}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"
