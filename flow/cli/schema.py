"""`flow schema`: the JSON Schema of graph.yaml, stage params included."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--builtin", action="store_true", help="only flow's own stage kinds (not other distributions')"
    )


def run(args: argparse.Namespace) -> int:
    import msgspec

    from mocks import ServerSpec

    from ..registry import default_registry
    from ..schema import graph_schema
    from ._output import out

    schema = graph_schema(default_registry(plugins=not args.builtin), mocks_type=ServerSpec)
    out(msgspec.json.format(msgspec.json.encode(schema), indent=2).decode())
    return 0
