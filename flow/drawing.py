"""Drawing a graph: Mermaid or Graphviz dot source, side outputs dotted."""

from __future__ import annotations

from .graph import edges
from .spec import Spec


def _draw(spec: Spec, node: str, main: str, side: str) -> list[str]:
    """One line per node and per edge, from format strings with the fields
    name, chain, source, target, buffer and port."""
    lines = []
    for name, n in spec.nodes.items():
        lines.append(node.format(name=name, chain=" → ".join(s.kind.name for s in n.stages)))
    for target, found in edges(spec).items():
        for edge in found:
            line = main if edge.port is None else side
            buffer = spec.nodes[target].buffer
            lines.append(line.format(source=edge.source, target=target, port=edge.port, buffer=buffer))
    return lines


def to_mermaid(spec: Spec) -> str:
    """Main edges solid, labelled with the reader's buffer; side outputs dotted."""
    lines = _draw(
        spec,
        '    {name}["{name}<br/>{chain}"]',
        "    {source} -- {buffer} --> {target}",
        "    {source} -. {port} .-> {target}",
    )
    return "\n".join(["flowchart LR", *lines]) + "\n"


def to_dot(spec: Spec) -> str:
    lines = _draw(
        spec,
        '    "{name}" [label="{name}\\n{chain}"];',
        '    "{source}" -> "{target}" [label="{buffer}"];',
        '    "{source}" -> "{target}" [label="{port}", style=dashed];',
    )
    return "\n".join(["digraph flow {", "    rankdir=LR;", "    node [shape=box];", *lines, "}"]) + "\n"
