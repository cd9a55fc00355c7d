"""The live progress display of `flow run` and its final table.

One line per source node: pages fetched (of those planned so far), records,
products, products per second, retries, breaker state and the fill of the
buffer the node writes into. Redrawn in place four times a second on a
terminal (stderr, so stdout stays clean for the summary); off when stderr is
not a terminal, with --no-progress, or -q. The final table goes to stdout.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

COLUMNS = ("source", "pages", "records", "products", "dead", "retries", "errors", "breaker")
Rows = list[tuple[str, ...]]


def rows(runtime: Any) -> list[tuple[str, ...]]:
    """One row of COLUMNS per source node, from the runtime's live counters."""
    out = []
    counters = runtime.resources.counters
    last_breaker: dict[str, str] = {}
    for event in runtime.resources.events:
        if event.get("event") == "breaker":
            last_breaker[event["node"]] = event["new"]
    errors: dict[str, int] = {}
    for error in runtime.errors:
        if error.get("node"):
            errors[error["node"]] = errors.get(error["node"], 0) + 1
    for name, node in runtime.nodes.items():
        if not node.stages[0].kind.is_source:
            continue
        c = counters.get(name, {})
        # style: auto's probes are not pages
        planned = runtime.stats[name].stages[0].items_out - c.get("probes", 0)
        pages = c.get("pages", 0)
        out.append(
            (
                name,
                f"{pages}/{planned}",
                str(c.get("records", 0)),
                str(c.get("products", 0)),
                str(c.get("dead_letters", 0)),
                str(c.get("retry", 0)),
                str(errors.get(name, 0)),
                last_breaker.get(name, "closed"),
            )
        )
    return out


def status_rows(status: dict[str, Any]) -> list[tuple[str, ...]]:
    """The same rows from a status (flow.status, as JSON data): a cluster
    run's, whose shards send theirs (flow.cluster_status), nodes named
    `shard-I/NODE`."""
    out = []
    for name, node in status["nodes"].items():
        first = node["stages"][0]
        if first["items_in"] is not None:  # not a source
            continue
        c = node["counters"]
        breakers = [e["breaker"] for e in node["endpoints"].values()]
        breaker = next((b for b in ("open", "half_open") if b in breakers), "closed")
        planned = first["items_out"] - c.get("probes", 0)
        cells = (f"{c.get('pages', 0)}/{planned}", c.get("records", 0), c.get("products", 0),
                 c.get("dead_letters", 0), c.get("retry", 0), node["errors"], breaker)  # fmt: skip
        out.append((name.split("/", 1)[-1], *map(str, cells)))
    return out


def table(lines: list[tuple[str, ...]]) -> str:
    widths = [max(len(c), *(len(r[i]) for r in lines)) if lines else len(c) for i, c in enumerate(COLUMNS)]

    def fmt(row: tuple[str, ...]) -> str:
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)
        ]
        return "  ".join(cells).rstrip()

    return "\n".join([fmt(COLUMNS), *map(fmt, lines)]) + "\n"


class Live:
    """Redraws the rows (`rows_of()`: `rows(runtime)` or `status_rows(...)`)
    in place on a terminal until stopped."""

    def __init__(self, rows_of: Callable[[], Rows], stream: TextIO = sys.stderr, interval: float = 0.25
                 ) -> None:  # fmt: skip
        self.rows_of, self.stream, self.interval = rows_of, stream, interval
        self._drawn = 0
        self._started = time.monotonic()

    def draw(self) -> None:
        lines = self.rows_of()
        elapsed = max(1e-9, time.monotonic() - self._started)
        products = sum(int(r[3]) for r in lines)
        text = table(lines) + f"{elapsed:6.1f}s  {products / elapsed:8.1f} products/s\n"
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")  # back to the first line, clear below
        self.stream.write(text)
        self.stream.flush()
        self._drawn = text.count("\n")

    def say(self, text: str) -> None:
        """A line above the table: the table is cleared, the line written,
        the table drawn again below it (so the next redraw keeps it)."""
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0
        self.stream.write(text + "\n")
        self.draw()

    async def run(self) -> None:
        try:
            while True:
                self.draw()
                await asyncio.sleep(self.interval)
        except asyncio.CancelledError:
            self.draw()
            raise
