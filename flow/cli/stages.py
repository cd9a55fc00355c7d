"""`flow stages [NAME]`: the stage kinds, or one kind's params and docs;
`--format markdown`: the same as a reference page (docs/stages.md)."""

from __future__ import annotations

import argparse
from typing import Any

from ._output import Abort, out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME", help="a stage kind to describe")
    parser.add_argument(
        "--format",
        choices=("text", "markdown"),
        default="text",
        help="text (default), or markdown: a section per kind with its params table (docs/stages.md)",
    )
    parser.add_argument(
        "--builtin", action="store_true", help="only flow's own stage kinds (not other distributions')"
    )


def _kinds(kind: Any) -> str:
    from ..registry import SAME, kind_names

    consumes = "(source)" if kind.consumes is None else kind_names(kind.consumes)
    produces = "(sink)" if kind.produces is None else "same"
    if kind.produces is not None and kind.produces is not SAME:
        produces = kind.produces.__name__
    return f"{consumes} -> {produces}"


def _default(default: Any) -> str | None:
    """The default as JSON, or None when the param is required."""
    import msgspec

    from ..units import enc_hook

    if default is msgspec.NODEFAULT:
        return None
    return msgspec.json.encode(default, enc_hook=enc_hook).decode()


def run(args: argparse.Namespace) -> int:
    from ..registry import default_registry

    registry = default_registry(plugins=not args.builtin)
    if args.name is not None and args.name not in registry:
        close = registry.suggest(args.name)
        hint = f"; did you mean '{close}'?" if close else f"; stages are: {', '.join(registry.names())}"
        raise Abort(f"unknown stage '{args.name}'{hint}")
    if args.format == "markdown":
        names = registry.names() if args.name is None else [args.name]
        out(_markdown([registry[name] for name in names], whole=args.name is None))
    elif args.name is None:
        _listing(registry)
    else:
        _describe(registry[args.name])
    return 0


def _listing(registry: Any) -> None:
    width = max(map(len, registry.names()))
    kinds_width = max(len(_kinds(registry[name])) for name in registry.names())
    for name in registry.names():
        kind = registry[name]
        summary = kind.doc.splitlines()[0] if kind.doc else ""
        origin = f"  ({kind.origin})" if kind.origin != "flow" else ""
        out(f"{name:<{width}}  {_kinds(kind):<{kinds_width}}  {summary}{origin}")


def _describe(kind: Any) -> None:
    from ..registry import describe_params

    out(f"{kind.name}: {_kinds(kind)}" + ("  (fan-in)" if kind.fan_in else ""))
    if kind.doc:
        out("")
        out("\n".join("  " + line.strip() for line in kind.doc.splitlines()))
    params = describe_params(kind.params)
    out("")
    if not params:
        out("params: none")
    for name, type_name, default, doc in params:
        shown = _default(default)
        shown = "required" if shown is None else f"default {shown}"
        out(f"  {name}: {type_name}  ({shown})" + (f"  {doc}" if doc else ""))


MARKDOWN_PREFACE = """\
# Stage kinds

<!-- Generated from the stage registry by `make docs` (`flow stages --format
markdown --builtin`); tests/flow/test_docs.py keeps it current. Edit a kind's
docstring or its params' comments, not this file. -->

Every stage kind, as `flow stages NAME` describes it: what it consumes and
produces (checked edge by edge by `flow validate`), its side outputs, and its
params with their types and defaults. A pipe entry is a kind's name
(`merge`) or `{kind: {param: value, ...}}`. A duration is a number of
seconds or a text with a unit (`250ms`, `2s`, `1m`, `7d`, `2w`); a rate is
`5/s`, `10/2s`, `100/m` or `off`. Every node has the side outputs
`NODE.errors` and `NODE.dead_letters`; the kinds below name those they add.
"""


def _markdown(kinds: list[Any], *, whole: bool) -> str:
    sections = [_markdown_kind(kind) for kind in kinds]
    if whole:
        index = ["| kind | consumes -> produces | what it does |", "|---|---|---|"]
        for kind in kinds:
            summary = " ".join(kind.doc.split("\n\n")[0].split())  # the first paragraph
            index.append(f"| [`{kind.name}`](#{kind.name}) | {_cell(_kinds(kind))} | {_cell(summary)} |")
        sections = [MARKDOWN_PREFACE + "\n" + "\n".join(index) + "\n", *sections]
    return "\n".join(sections)


def _markdown_kind(kind: Any) -> str:
    from ..registry import SAME, describe_params, kind_names

    lines = [f"## {kind.name}", ""]
    if kind.doc:  # paragraphs as written; a docstring's continuation lines are indented
        lines += [line.strip() for line in kind.doc.splitlines()]
        lines.append("")
    consumes = "nothing (a source)" if kind.consumes is None else f"`{kind_names(kind.consumes)}`"
    if kind.produces is None:
        produces = "nothing (a sink)"
    elif kind.produces is SAME:
        produces = "what it consumes"
    else:
        produces = f"`{kind.produces.__name__}`"
    lines.append(f"- consumes: {consumes}; produces: {produces}")
    if kind.outputs:
        ports = ", ".join(f"`NODE.{port}` (`{item.__name__}`)" for port, item in kind.outputs.items())
        lines.append(f"- side outputs: {ports}, besides `NODE.errors` and `NODE.dead_letters`")
    else:
        lines.append("- side outputs: `NODE.errors` and `NODE.dead_letters`")
    if kind.fan_in:
        lines.append("- fan-in: may start a node that reads several nodes")
    if kind.per_item:
        lines.append("- per item: the engine maps it over its input, `concurrency` calls in flight at most")
    if kind.whole:
        lines.append("- writes its output whole at its end (a file renamed into place)")
    if kind.store:
        lines.append("- a database sink: adds to what earlier runs wrote; `flow replay` writes to it")
    if kind.origin != "flow":
        lines.append(f"- from the distribution `{kind.origin}`")
    lines.append("")
    params = describe_params(kind.params)
    if not params:
        lines.append("Params: none.")
    else:
        lines += ["| param | type | default | about |", "|---|---|---|---|"]
        for name, type_name, default, doc in params:
            shown = _default(default)
            shown = "required" if shown is None else f"`{_cell(shown)}`"
            lines.append(f"| `{name}` | `{_cell(type_name)}` | {shown} | {_cell(doc)} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Text for a markdown table cell: a `|` would end the cell."""
    return text.replace("|", "\\|")
