"""`flow schema`: the JSON Schema of graph.yaml, stage params included."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def run(args: argparse.Namespace) -> int:
    import msgspec

    from mocks import ServerSpec

    from ..schema import graph_schema
    from ._output import out

    out(msgspec.json.format(msgspec.json.encode(graph_schema(mocks_type=ServerSpec)), indent=2).decode())
    return 0
