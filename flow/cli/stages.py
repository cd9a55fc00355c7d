"""`flow stages [NAME]`: the stage kinds, or one kind's params and docs."""

from __future__ import annotations

import argparse

from ._output import Abort, out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME", help="a stage kind to describe")


def _kinds(consumes: str | None, produces: str | None) -> str:
    return f"{consumes or '(source)'} -> {produces or '(sink)'}"


def run(args: argparse.Namespace) -> int:
    import msgspec

    from ..registry import default_registry, describe_params

    registry = default_registry()
    if args.name is None:
        width = max(map(len, registry.names()))
        for name in registry.names():
            kind = registry[name]
            summary = kind.doc.splitlines()[0] if kind.doc else ""
            out(f"{name:<{width}}  {_kinds(kind.consumes, kind.produces):<22}  {summary}")
        return 0
    if args.name not in registry:
        close = registry.suggest(args.name)
        hint = f"; did you mean '{close}'?" if close else f"; stages are: {', '.join(registry.names())}"
        raise Abort(f"unknown stage '{args.name}'{hint}")
    kind = registry[args.name]
    out(f"{kind.name}: {_kinds(kind.consumes, kind.produces)}" + ("  (fan-in)" if kind.fan_in else ""))
    if kind.doc:
        out("")
        out("\n".join("  " + line.strip() for line in kind.doc.splitlines()))
    params = describe_params(kind.params)
    out("")
    if not params:
        out("params: none")
    for name, type_name, default in params:
        shown = (
            "required" if default is msgspec.NODEFAULT else f"default {msgspec.json.encode(default).decode()}"
        )
        out(f"  {name}: {type_name}  ({shown})")
    return 0
