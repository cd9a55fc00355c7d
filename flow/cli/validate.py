"""`flow validate GRAPH`: every check, nothing run."""

from __future__ import annotations

import argparse

from ._load import add_graph_arguments, load_checked
from ._output import out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_graph_arguments(parser)
    parser.add_argument("--strict", action="store_true", help="warnings are errors (exit 2)")


def run(args: argparse.Namespace) -> int:
    spec = load_checked(args, strict=args.strict)
    stages = sum(len(node.stages) for node in spec.nodes.values())
    out(f"{args.graph}: valid ({len(spec.nodes)} nodes, {stages} stages, {len(spec.mocks)} mock servers)")
    return 0
