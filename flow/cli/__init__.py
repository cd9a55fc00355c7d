"""The `flow` command: one module per subcommand, imported only when that
command runs or shows its help, so that `flow --help` imports none of them
(nor asyncio, aiohttp, msgspec, YAML or OpenTelemetry)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Collection, Sequence
from typing import NoReturn

from ._output import Abort, error
from ._signals import PRESSES

COMMANDS = {
    "run": ("run", "run a graph: start its mocks, stream it to the sinks, write the run report"),
    "serve": ("serve", "run a graph as a long-running service: its stages serve HTTP (a job API, webhooks)"),
    "replay": ("replay", "pass the stored dead letters through the graph again, into its database sinks"),
    "validate": ("validate", "check a graph file: every problem, located; nothing runs"),
    "plan": ("plan", "predict each source's pages, requests and time before running; "
             "one request per source at most"),
    "graph": ("graph", "print the graph as Mermaid or Graphviz dot source"),
    "stages": ("stages", "list the stage kinds, or describe one"),
    "schema": ("schema", "print the JSON Schema of graph.yaml (for editors)"),
    "top": ("top", "watch a running graph (flow run --status-port): its nodes, refreshed in place"),
    "tap": ("tap", "print items passing a node of a running graph (flow run --status-port)"),
    "test": ("test", "run the graph offline on recorded traffic (flow run --record); check its tests: block"),
    "mocks": ("mocks", "run the embedded mock APIs on 127.0.0.1"),
}
EPILOG = """\
exit codes: 0 done and nothing lost; 1 the deadline cut the run short, or
something was lost (a page or item failed for good, a source produced nothing;
run.on_loss: warn makes those 0); 2 bad usage, an invalid graph, or an output
directory another run is using (nothing ran); 130 interrupted. FLOW_DEBUG=1
shows tracebacks.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(arguments_of: Collection[str] = tuple(COMMANDS)) -> argparse.ArgumentParser:
    """The parser of every command; only those in `arguments_of` get their
    arguments (which imports their modules). `main` passes the one command
    on its command line, so `flow --help` lists the commands and imports none."""
    from flow import __version__

    parser = _Parser(
        prog="flow",
        description="Pull records from many unreliable, rate-limited HTTP APIs into one dataset.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"flow {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, summary) in COMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        if name == "mocks":
            sub.add_argument("args", nargs=argparse.REMAINDER, help="see flow mocks --help")
        elif name in arguments_of:
            importlib.import_module(f"flow.cli.{module}").add_arguments(sub)
    return parser


def _command_named(args_list: list[str]) -> list[str]:
    """The command on a command line: its first word that is not an option
    (flow's own options, --help and --version, take no value)."""
    return [arg for arg in args_list if not arg.startswith("-")][:1]


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "mocks":  # the mocks' own parser owns its flags and --help
        from mocks.__main__ import main as mocks_main

        return mocks_main(args_list[1:], prog="flow mocks")
    # `flow run`: a Ctrl-C from here on, even during the imports, belongs to
    # the run (see _signals); elsewhere a Ctrl-C exits 130, never a traceback.
    held: contextlib.AbstractContextManager[object] = (
        PRESSES.held() if args_list[:1] == ["run"] else contextlib.nullcontext()
    )
    try:
        with held:
            return _command(args_list)
    except KeyboardInterrupt:
        return 130


def _command(args_list: list[str]) -> int:
    parser = build_parser(_command_named(args_list))
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    module = importlib.import_module(f"flow.cli.{COMMANDS[args.command][0]}")
    try:
        return int(module.run(args))
    except Abort as abort:
        if abort.message:
            error(abort.message)
        return abort.code
    except Exception as exc:  # an internal error: one line unless debugging
        if os.environ.get("FLOW_DEBUG"):
            raise
        error(f"internal error: {type(exc).__name__}: {exc} (FLOW_DEBUG=1 shows the traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
