"""`flow stages [NAME]`: the stage kinds, or one kind's params and docs."""

from __future__ import annotations

import argparse
from typing import Any

from ._output import Abort, out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME", help="a stage kind to describe")


def _kinds(kind: Any) -> str:
    from ..registry import SAME, kind_names

    consumes = "(source)" if kind.consumes is None else kind_names(kind.consumes)
    produces = "(sink)" if kind.produces is None else "same"
    if kind.produces is not None and kind.produces is not SAME:
        produces = kind.produces.__name__
    return f"{consumes} -> {produces}"


def run(args: argparse.Namespace) -> int:
    import msgspec

    from ..registry import default_registry, describe_params
    from ..units import enc_hook

    registry = default_registry()
    if args.name is None:
        width = max(map(len, registry.names()))
        kinds_width = max(len(_kinds(registry[name])) for name in registry.names())
        for name in registry.names():
            kind = registry[name]
            summary = kind.doc.splitlines()[0] if kind.doc else ""
            origin = f"  ({kind.origin})" if kind.origin != "flow" else ""
            out(f"{name:<{width}}  {_kinds(kind):<{kinds_width}}  {summary}{origin}")
        return 0
    if args.name not in registry:
        close = registry.suggest(args.name)
        hint = f"; did you mean '{close}'?" if close else f"; stages are: {', '.join(registry.names())}"
        raise Abort(f"unknown stage '{args.name}'{hint}")
    kind = registry[args.name]
    out(f"{kind.name}: {_kinds(kind)}" + ("  (fan-in)" if kind.fan_in else ""))
    if kind.doc:
        out("")
        out("\n".join("  " + line.strip() for line in kind.doc.splitlines()))
    params = describe_params(kind.params)
    out("")
    if not params:
        out("params: none")
    for name, type_name, default, doc in params:
        shown = (
            "required"
            if default is msgspec.NODEFAULT
            else f"default {msgspec.json.encode(default, enc_hook=enc_hook).decode()}"
        )
        out(f"  {name}: {type_name}  ({shown})" + (f"  {doc}" if doc else ""))
    return 0
