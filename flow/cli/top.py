"""`flow top URL`: a running graph's nodes, refreshed in place.

Polls URL/status (a `flow run --status-port` server, flow.status) every
--interval seconds and redraws one row per node: items out, items per second
(between the last two polls, by the run's own clock), the fill of the
buffers it writes into, errors, dead letters, retries and its breaker. On a
terminal the table is redrawn in place (ANSI, as flow.cli.progress does);
otherwise each poll prints a table of its own. Exits 0 when the run ends
(the status says so, or its server goes away after a poll succeeded), 1 if
it cannot reach the server at all, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

from ._output import Abort, out
from ._status import Unreachable, base_url, get

COLUMNS = ("node", "out", "out/s", "buffer", "errors", "dead", "retries", "breaker")
BREAKERS = ("open", "half_open", "closed")  # worst first


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", metavar="URL", help="the status URL `flow run --status-port` printed")
    parser.add_argument(
        "--interval", type=float, default=1.0, metavar="SECONDS", help="between polls (default 1)"
    )
    parser.add_argument("--once", action="store_true", help="one table, then exit")


def rows(status: dict[str, Any], before: dict[str, Any] | None) -> list[tuple[str, ...]]:
    """One row of COLUMNS per node; out/s from the poll `before` this one."""
    seconds = status["elapsed"] - before["elapsed"] if before else 0.0
    found = []
    for name, node in status["nodes"].items():
        rate = "-"
        if before and seconds > 0 and name in before["nodes"]:
            rate = f"{(node['items_out'] - before['nodes'][name]['items_out']) / seconds:.1f}"
        main = [edge for edge in node["outputs"] if edge["port"] is None]
        fullest = max(main, key=lambda edge: edge["fill"] / edge["capacity"], default=None)
        buffer = f"{fullest['fill']}/{fullest['capacity']}" if fullest else "-"
        states = {endpoint["breaker"] for endpoint in node["endpoints"].values()}
        breaker = next((state for state in BREAKERS if state in states), "-")
        counters = node["counters"]
        cells = (
            node["items_out"],
            rate,
            buffer,
            node["errors"],
            node["dead_letters"],
            counters.get("retry", 0),
        )
        found.append((name, *map(str, cells), breaker))
    return found


def table(status: dict[str, Any], lines: list[tuple[str, ...]], url: str) -> str:
    widths = [max(len(c), *(len(r[i]) for r in lines)) if lines else len(c) for i, c in enumerate(COLUMNS)]

    def fmt(row: tuple[str, ...]) -> str:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        return "  ".join(cells).rstrip()

    head = f"run {status['run_id']}  {status['state']}  {status['elapsed']:.1f}s  {url}"
    if status.get("stopped"):
        head += f"  (stopped: {status['stopped']})"
    return "\n".join([head, fmt(COLUMNS), *map(fmt, lines)]) + "\n"


class Screen:
    """Draws each table over the last one on a terminal, below it elsewhere."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.drawn = stream, 0
        self.terminal = stream.isatty()

    def draw(self, text: str) -> None:
        if self.drawn and self.terminal:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")  # back to the first line, clear below
        elif self.drawn:
            self.stream.write("\n")
        self.stream.write(text)
        self.stream.flush()
        self.drawn = text.count("\n")


def poll(url: str) -> dict[str, Any]:
    with get(f"{url}/status") as response:
        try:
            status = json.loads(response.read())
        except ValueError:
            raise Abort(f"{url}/status: not a flow status (no JSON)", 1) from None
    if not isinstance(status, dict) or "nodes" not in status:
        raise Abort(f"{url}/status: not a flow status", 1)
    return status


def run(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise Abort("--interval: a number of seconds above 0")
    url = base_url(args.url)
    screen = Screen(sys.stdout)
    before: dict[str, Any] | None = None
    while True:
        try:
            status = poll(url)
        except Unreachable as exc:
            if before is None:
                raise Abort(str(exc), 1) from None
            out("run ended")
            return 0
        screen.draw(table(status, rows(status, before), url))
        if args.once:
            return 0
        if status["state"] == "ended":
            out("run ended")
            return 0
        before = status
        time.sleep(args.interval)
