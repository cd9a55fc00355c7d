"""The `flow` command. Subcommands import their modules lazily so `--help` is fast."""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """\
usage: flow [--version] [--help] COMMAND [ARGS]

Pull records from many unreliable, rate-limited HTTP APIs into one dataset.

commands:
  mocks    run the embedded mock APIs on 127.0.0.1 (see: flow mocks --help)

exit codes: 0 success, 2 bad usage or invalid input, 130 interrupted.
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(USAGE, end="")
        return 0 if args else 2
    if args[0] == "--version":
        from . import __version__

        print(f"flow {__version__}")
        return 0
    command, rest = args[0], args[1:]
    if command == "mocks":
        from mocks.__main__ import main as mocks_main

        return mocks_main(rest, prog="flow mocks")
    print(f"flow: error: unknown command {command!r} (see flow --help)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
