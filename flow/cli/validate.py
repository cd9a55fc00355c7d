"""`flow validate GRAPH`: every check, nothing run.

`--format json` prints one JSON object for editors and CI instead of lines:

    {"file": "graph.yaml", "valid": false, "nodes": 8, "stages": 24, "mock_servers": 3,
     "problems": [{"severity": "error", "where": "graph.yaml:12:5", "line": 12, "column": 5,
                   "message": "...", "hint": "..."}]}

(`nodes`, `stages` and `mock_servers` when the file decoded; `line` and
`column` null for a problem in an override, `--set` or FLOW__ variable,
whose `where` names it). The exit code is the same either way: 0 valid
(warnings allowed unless --strict), 2 not.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from ._load import add_graph_arguments, load_checked
from ._output import Abort, out

# flow's located problem lines (flow.problems.format_problem)
_LINE = re.compile(
    r"^(?P<where>.*?(?::(?P<line>\d+):(?P<column>\d+))?): (?P<warning>warning: )?(?P<text>.*)$", re.S
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_graph_arguments(parser)
    parser.add_argument("--strict", action="store_true", help="warnings are errors (exit 2)")
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="json: one object, every problem located"
    )


def run(args: argparse.Namespace) -> int:
    if args.format == "json":
        return _json(args)
    spec = load_checked(args, strict=args.strict)
    stages = sum(len(node.stages) for node in spec.nodes.values())
    out(f"{args.graph}: valid ({len(spec.nodes)} nodes, {stages} stages, {len(spec.mocks)} mock servers)")
    return 0


def _json(args: argparse.Namespace) -> int:
    from mocks import ServerSpec

    from ..graph import check
    from ..registry import default_registry
    from ..spec import SpecError, load_spec

    report: dict[str, Any] = {"file": args.graph, "valid": False}
    try:
        spec = load_spec(args.graph, default_registry(), sets=args.sets, mocks_type=ServerSpec)
    except SpecError as err:
        report["problems"] = [_problem(line) for line in err.lines]
    except Abort as abort:  # e.g. the file cannot be read
        report["problems"] = [_problem(abort.message)]
    else:
        problems = check(spec)
        report["nodes"], report["mock_servers"] = len(spec.nodes), len(spec.mocks)
        report["stages"] = sum(len(node.stages) for node in spec.nodes.values())
        report["problems"] = [_problem(spec.where(p), p.warning and not args.strict) for p in problems]
    report["valid"] = not any(p["severity"] == "error" for p in report["problems"])
    out(json.dumps(report, indent=2, ensure_ascii=False))
    return 0 if report["valid"] else 2


def _problem(text: str, warning: bool | None = None) -> dict[str, Any]:
    """One problem line as fields: where, line, column, message, hint."""
    found = _LINE.match(text)
    if found is None:
        return {"severity": "error", "where": None, "line": None, "column": None, "message": text, "hint": ""}
    message, _, hint = found["text"].partition("; hint: ")
    is_warning = bool(found["warning"]) if warning is None else warning
    return {
        "severity": "warning" if is_warning else "error",
        "where": found["where"],
        "line": int(found["line"]) if found["line"] else None,
        "column": int(found["column"]) if found["column"] else None,
        "message": message,
        "hint": hint,
    }
