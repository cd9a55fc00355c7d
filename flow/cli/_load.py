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


def load_checked(  # -> flow.spec.Spec
    args: argparse.Namespace, refs: dict[str, str] | None = None, *, strict: bool = False
):
    """The checked spec, its `mocks:` decoded into the mocks' ServerSpecs
    (the CLI is where the engine meets its stages and mocks); `refs`: the
    mock servers' URLs, once started. Located errors abort with exit 2,
    warnings are printed."""
    from mocks import ServerSpec

    from ..graph import check
    from ..registry import default_registry
    from ..spec import SpecError, load_spec

    try:
        spec = load_spec(args.graph, default_registry(), sets=args.sets, mocks_type=ServerSpec, refs=refs)
    except SpecError as err:
        raise Abort("\n".join(err.lines)) from None
    if refs is not None:
        return spec  # checked before the mocks started
    problems = check(spec)
    errors = [spec.where(p) for p in problems if strict or not p.warning]
    for p in problems:
        if p.warning and not strict:
            warning(spec.where(p))
    if errors:
        raise Abort("\n".join(errors))
    return spec
