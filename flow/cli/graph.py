"""`flow graph GRAPH [--format mermaid|dot]`: the DAG as picture source."""

from __future__ import annotations

import argparse

from ._load import add_graph_arguments, load_checked
from ._output import out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_graph_arguments(parser)
    parser.add_argument("--format", choices=("mermaid", "dot"), default="mermaid", help="default: mermaid")


def run(args: argparse.Namespace) -> int:
    from ..drawing import to_dot, to_mermaid

    spec = load_checked(args)
    out(to_mermaid(spec) if args.format == "mermaid" else to_dot(spec))
    return 0
