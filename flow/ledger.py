"""The ledger: where every page and every record of each source went,
balanced at the end of every run (run.json `ledger`; summary.json repeats
each source's row).

Stages count on a source's ledger with `ctx.count(NAME, on=SOURCE)` under the
names below, each where the event happens: the planner counts pages planned
(and, when it stops early with the total known, pages not attempted), fetch
counts pages fetched and pages failed by reason, parse counts the records
it decodes as received, dead letters are counted by `ctx.dead_letter`,
dedupe counts duplicates, filters count what they drop. The engine counts
the rest: pages it abandoned (their node's branch failed), records a source
stage yields (received where they enter the graph), and the records each
sink took. An item kind that carries records says so with a method
`records_by_source() -> dict[str, int]`; a sink that can be reached by such
a kind is a *record sink*, and the engine counts, per source, the records of
every item that sink finished with. A stage that makes records out of items
that are not records counts them as received itself.

The equations, per source and for every record sink S it reaches:

    pages:    planned  = fetched + failed + abandoned + unaccounted
    records:  expected[S] = written[S] + unaccounted[S], where
              expected[S] = sum over nodes v of
                            (received at v - settled at v) * paths(v -> S)

`settled` is dead letters + duplicates + filtered; paths(v -> S) counts the
main-edge paths from node v to S (a sink sees a record once per path). In a
straight line every path count is 1, and the records equation reads
received = dead_letters + duplicates + filtered + written + unaccounted.
`unaccounted` is what no stage saw end: 0 when nothing vanished, below 0
when something was counted twice. Pages not attempted were never planned: a
known loss beside the equation.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from typing import Any

from .graph import Edge, stage_inputs
from .spec import Spec
from .topology import main_readers, topological

PLANNED = "pages_planned"
FETCHED = "pages"
FAILED = "pages_failed"  # and FAILED + ":" + reason, per reason
ABANDONED = "pages_abandoned"
NOT_ATTEMPTED = "pages_not_attempted"
FROM_STATE = "pages_from_state"  # of those fetched: taken from the run being resumed (flow.journal)
RECEIVED = "records"
DEAD = "dead_letters"
DUPLICATES = "duplicates"
FILTERED = "filtered"
SETTLED = (DEAD, DUPLICATES, FILTERED)  # a record's ends other than a sink
FLOWS = frozenset({RECEIVED, *SETTLED})  # record counts kept by node too

__all__ = [
    "Ledgers",
    "counted",
    "entry",
    "failed",
    "holds_records",
    "losses",
    "paths",
    "written",
    "yields_records",
]


def failed(reason: str) -> str:
    """The counter of pages failed for `reason` (count FAILED too)."""
    return f"{FAILED}:{reason}"


@functools.lru_cache(maxsize=256)
def holds_records(kind: type) -> bool:
    """Whether items of `kind` carry records a sink writes (see the module
    doc). Cached: asked for every item a sink takes, and a miss raises (and
    formats) an AttributeError."""
    return callable(getattr(kind, "records_by_source", None))


def yields_records(kind: Any) -> bool:
    """Whether a source stage of `kind` may yield items holding records
    (generic sources produce ANY: known only at run time)."""
    produced = kind.produces
    return produced is object or not isinstance(produced, type) or holds_records(produced)


def entry(counters: Mapping[str, int], flows: Mapping[str, Mapping[str, int]], written: Mapping[str, int],
          paths: Mapping[str, Mapping[str, int]], sinks: list[str]) -> dict[str, Any]:  # fmt: skip
    """One source's ledger: its counters (pages; record totals), the record
    counts by the node that counted them (`flows`), what each record sink
    wrote of it, and the graph's paths (node -> sink -> paths)."""
    c = counters
    by_reason = {k.split(":", 1)[1]: v for k, v in sorted(c.items()) if k.startswith(FAILED + ":")}
    pages = {
        "planned": c.get(PLANNED, 0),
        "fetched": c.get(FETCHED, 0),
        "from_state": c.get(FROM_STATE, 0),
        "failed": c.get(FAILED, 0),
        "failed_by_reason": by_reason,
        "abandoned": c.get(ABANDONED, 0),
        "not_attempted": c.get(NOT_ATTEMPTED, 0),
    }
    pages["unaccounted"] = pages["planned"] - pages["fetched"] - pages["failed"] - pages["abandoned"]
    # A record received at node v reaches sink S once per path v -> S; one
    # settled at v (dead letter, duplicate, filtered) takes those copies away.
    expected = {
        sink: sum(
            (f.get(RECEIVED, 0) - sum(f.get(k, 0) for k in SETTLED)) * paths.get(node, {}).get(sink, 0)
            for node, f in flows.items()
        )
        for sink in sinks
    }
    records = {
        "received": c.get(RECEIVED, 0),
        "dead_letters": c.get(DEAD, 0),
        "duplicates": c.get(DUPLICATES, 0),
        "filtered": c.get(FILTERED, 0),
        "expected": expected,
        "written": {sink: written.get(sink, 0) for sink in sinks},
        "unaccounted": {sink: expected[sink] - written.get(sink, 0) for sink in sinks},
    }
    return {"pages": pages, "records": records}


def losses(ledger: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What the ledger says was lost, in words: pages never attempted, and
    anything unaccounted (which no error record may explain)."""
    lost = []
    for source, row in ledger.items():
        pages, records = row["pages"], row["records"]
        if pages["not_attempted"]:
            lost.append(f"source '{source}': {pages['not_attempted']} pages not attempted")
        if pages["unaccounted"]:
            lost.append(f"source '{source}': {pages['unaccounted']} pages unaccounted for")
        for sink, n in records["unaccounted"].items():
            if n:
                lost.append(f"source '{source}': {n} records unaccounted for at sink '{sink}'")
    return lost


def paths(spec: Spec, wiring: dict[str, list[Edge]]) -> dict[str, dict[str, int]]:
    """node -> record sink -> the number of paths (main edges) from the node
    to that sink, for every node that reaches one (a sink reaches itself)."""
    inputs, readers = stage_inputs(spec, wiring), main_readers(spec.nodes, wiring)
    found: dict[str, dict[str, int]] = {}
    for name in reversed(topological({n: [e.source for e in edges] for n, edges in wiring.items()})):
        counts: dict[str, int] = {}
        if spec.nodes[name].stages[-1].kind.is_sink and any(holds_records(k) for k in inputs[name][-1] or ()):
            counts[name] = 1
        for reader in readers[name]:
            for sink, n in found.get(reader, {}).items():
                counts[sink] = counts.get(sink, 0) + n
        if counts:
            found[name] = counts
    return found


class Ledgers:
    """The run's ledgers, kept by the engine (RunState.ledgers): the record
    counts by source and by the node that counted them, and what each record
    sink wrote, by source. Page counts and totals are the run's counters."""

    def __init__(
        self, sources: list[str] | None = None, paths: dict[str, dict[str, int]] | None = None
    ) -> None:
        self.sources = sources or []  # source nodes: each has a ledger, a silent one too
        self.paths = paths or {}
        self.sinks = {sink for counts in self.paths.values() for sink in counts}
        self.flows: defaultdict[str, defaultdict[str, defaultdict[str, int]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(int))
        )
        self.written: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
        # sink -> source -> records a `whole` sink has taken, not yet written (`commit`)
        self.held: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))

    def wrote(self, sink: str, item: Any) -> None:
        """Record sink `sink` is done with `item`."""
        for source, n in item.records_by_source().items():
            self.written[source][sink] += n

    def hold(self, sink: str, item: Any) -> None:
        """A `whole` sink took `item`: written only if it ends well (`commit`)."""
        for source, n in item.records_by_source().items():
            self.held[sink][source] += n

    def commit(self, sink: str) -> None:
        """Sink `sink` ended without error: what it held is written."""
        for source, n in self.held.pop(sink, {}).items():
            self.written[source][sink] += n

    def row(self, source: str, counters: Mapping[str, int], sink: str | None = None) -> dict[str, Any]:
        """`source`'s ledger; with `sink`, what that sink holds counts as
        written (a `whole` sink reporting on itself before its end)."""
        flows, written = self.flows.get(source, {}), self.written.get(source, {})
        held = self.held.get(sink, {}).get(source, 0) if sink is not None else 0
        if held:
            written = {**written, sink: written.get(sink, 0) + held}
        reached = {sink for node in (source, *flows) for sink in self.paths.get(node, {})}
        return entry(counters, flows, written, self.paths, sorted(reached | set(written)))

    def rows(self, counters: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, Any]]:
        """Every ledger: the source nodes', and any other source name records
        were counted under (a stage labelling records with a name of its own)."""
        names = dict.fromkeys([*self.sources, *sorted(set(self.flows) | set(self.written))])
        return {name: self.row(name, counters.get(name, {})) for name in names}


async def written(
    items: AsyncIterator[Any], sink: str, ledgers: Ledgers, whole: bool = False
) -> AsyncIterator[Any]:
    """The input of record sink `sink`, counting the records of each item
    once the sink is done with it: when it asks for the next one (the last:
    when it asks past the end). An item the sink failed on is not counted.
    A `whole` sink's are held until it ends well (the runtime commits them).
    (A per-item sink is counted as each call returns: see `counted`.)"""
    done = ledgers.hold if whole else ledgers.wrote
    held = None
    async for item in items:
        if held is not None:
            done(sink, held)
        held = item if holds_records(type(item)) else None
        yield item
    if held is not None:
        done(sink, held)


def counted(run: Any, sink: str, ledgers: Ledgers) -> Any:
    """A per-item sink's `run`, counting each item's records once its call
    returned (not when it raised)."""

    async def run_counted(item: Any, params: Any, ctx: Any) -> Any:
        result = await run(item, params, ctx)
        if holds_records(type(item)):
            ledgers.wrote(sink, item)
        return result

    return run_counted
