"""Loading and checking a graph for the commands that take one."""

from __future__ import annotations

import argparse

from ._output import Abort, warning


def add_graph_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("graph", metavar="GRAPH", help="the graph file, e.g. graph.yaml")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a value, e.g. --set run.deadline=30s (repeatable; beats FLOW__RUN__DEADLINE "
        "variables, which beat the file)",
    )


def load_checked(args: argparse.Namespace):  # -> flow.spec.Spec
    """The checked spec; located errors abort with exit 2, warnings are printed."""
    from ..graph import check
    from ..registry import default_registry
    from ..spec import SpecError, load_spec

    try:
        spec = load_spec(args.graph, default_registry(), sets=args.sets)
    except SpecError as err:
        raise Abort("\n".join(err.lines)) from None
    problems = check(spec)
    errors = [spec.where(p) for p in problems if not p.warning]
    for p in problems:
        if p.warning:
            warning(spec.where(p))
    if errors:
        raise Abort("\n".join(errors))
    return spec
