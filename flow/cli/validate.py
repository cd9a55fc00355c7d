"""`flow validate GRAPH`: every check, nothing run.

`--format json` prints one JSON object for editors and CI instead of lines:

    {"file": "graph.yaml", "valid": false, "nodes": 8, "stages": 24, "mock_servers": 3,
     "problems": [{"severity": "error", "where": "graph.yaml:12:5", "line": 12, "column": 5,
                   "message": "...", "hint": "..."}]}

(`nodes`, `stages` and `mock_servers` when the file decoded; `line` and
`column` null for a problem in an override, `--set` or FLOW__ variable,
whose `where` names it). Problems of the checks are located from the
problem itself; those of a file that did not load, from their line, by the
places they can be (the file, an override), so a path or a value holding
": " does not split them in the wrong place. The exit code is the same either way: 0 valid
(warnings allowed unless --strict), 2 not.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from ._load import add_graph_arguments, load_checked
from ._output import Abort, out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_graph_arguments(parser)
    parser.add_argument("--strict", action="store_true", help="warnings are errors (exit 2)")
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="json: one object, every problem located"
    )
    parser.add_argument(
        "--shards",
        type=int,
        metavar="N",
        help="also show where the sources would run over N shards: sources sharing a named rate "
        "limit or a server stay together (flow.placement)",
    )


def run(args: argparse.Namespace) -> int:
    if args.format == "json":
        return _json(args)
    spec = load_checked(args, strict=args.strict)
    stages = sum(len(node.stages) for node in spec.nodes.values())
    out(f"{args.graph}: valid ({len(spec.nodes)} nodes, {stages} stages, {len(spec.mocks)} mock servers)")
    if args.shards:
        for line in _placement(spec, args.shards).describe():
            out(f"  {line}")
    return 0


def _placement(spec: Any, shards: int) -> Any:
    from ..placement import place

    if shards < 1:
        raise Abort(f"--shards {shards}: a cluster has at least one shard")
    return place(spec, shards)


def _json(args: argparse.Namespace) -> int:
    import os

    from mocks import ServerSpec

    from .._interpolate import ENV_PREFIX, scrub
    from ..graph import check
    from ..problems import OVERRIDE
    from ..registry import default_registry
    from ..spec import SpecError, load_spec

    report: dict[str, Any] = {"file": args.graph, "valid": False}
    # Where a problem may be: the file (then LINE[:COL]), an override's label.
    labels = [f"--set {s}" for s in args.sets] + [n for n in os.environ if n.startswith(ENV_PREFIX)]
    try:
        spec = load_spec(args.graph, default_registry(), sets=args.sets, mocks_type=ServerSpec)
    except SpecError as err:
        report["problems"] = [_parsed(line, args.graph, labels) for line in err.lines]
    except Abort as abort:  # e.g. the file cannot be read
        report["problems"] = [_parsed(abort.message, args.graph, labels)]
    else:
        report["nodes"], report["mock_servers"] = len(spec.nodes), len(spec.mocks)
        report["stages"] = sum(len(node.stages) for node in spec.nodes.values())
        report["problems"] = []
        if args.shards:
            report["placement"] = _placement(spec, args.shards).to_json()
        for p in check(spec):  # located from the Problem itself
            if p.path and p.path[0] == OVERRIDE:
                where, line, column = str(p.path[1]), None, None
            else:
                line, column = spec.locator.where(p.path, key=p.key) or (1, 1)
                where = f"{spec.file}:{line}:{column}"
            severity = "warning" if p.warning and not args.strict else "error"
            message, hint = scrub(p.message, spec.secrets), scrub(p.hint, spec.secrets)
            report["problems"].append(_fields(severity, where, line, column, message, hint))
    report["valid"] = not any(p["severity"] == "error" for p in report["problems"])
    out(json.dumps(report, indent=2, ensure_ascii=False))
    return 0 if report["valid"] else 2


def _parsed(text: str, graph: str, labels: list[str]) -> dict[str, Any]:
    """A located line of a file that did not load: its place by what it
    can be (the graph file with LINE[:COL], an override's label), so that
    a path or a value holding ': ' cannot split it in the wrong place."""
    line = column = None
    where, rest = None, text
    located = re.match(re.escape(graph) + r":(\d+)(?::(\d+))?: ", text)
    if located is not None:
        line, column = int(located[1]), int(located[2]) if located[2] else None
        where, rest = located[0][:-2], text[located.end() :]
    else:
        for label in sorted([graph, *labels], key=len, reverse=True):
            if text.startswith(label + ": "):
                where, rest = label, text[len(label) + 2 :]
                break
    severity = "error"
    if rest.startswith("warning: "):
        severity, rest = "warning", rest[len("warning: ") :]
    message, _, hint = rest.partition("; hint: ")
    return _fields(severity, where, line, column, message, hint)


def _fields(severity: str, where: str | None, line: int | None, column: int | None, message: str,
            hint: str) -> dict[str, Any]:  # fmt: skip
    fields = {"severity": severity, "where": where, "line": line, "column": column, "message": message}
    return {**fields, "hint": hint}
