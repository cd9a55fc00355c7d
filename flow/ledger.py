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

The equations, per source and for every record sink it reaches:

    pages:    planned  = fetched + failed + abandoned + unaccounted
    records:  received = dead_letters + duplicates + filtered + written + unaccounted

`unaccounted` is what no stage saw end: 0 when nothing vanished. Pages not
attempted were never planned: they are a known loss beside the equation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from typing import Any

from .graph import Edge, stage_inputs
from .spec import Spec

PLANNED = "pages_planned"
FETCHED = "pages"
FAILED = "pages_failed"  # and FAILED + ":" + reason, per reason
ABANDONED = "pages_abandoned"
NOT_ATTEMPTED = "pages_not_attempted"
RECEIVED = "records"
DEAD = "dead_letters"
DUPLICATES = "duplicates"
FILTERED = "filtered"

__all__ = ["entry", "failed", "holds_records", "losses", "record_sinks", "written"]


def failed(reason: str) -> str:
    """The counter of pages failed for `reason` (count FAILED too)."""
    return f"{FAILED}:{reason}"


def holds_records(kind: type) -> bool:
    """Whether items of `kind` carry records a sink writes (see the module doc)."""
    return callable(getattr(kind, "records_by_source", None))


def yields_records(kind: Any) -> bool:
    """Whether a source stage of `kind` may yield items holding records
    (generic sources produce ANY: known only at run time)."""
    produced = kind.produces
    return produced is object or not isinstance(produced, type) or holds_records(produced)


def receive(counters: Mapping[str, defaultdict[str, int]], item: Any) -> None:
    """Records a source stage yielded: received where they enter the graph."""
    if holds_records(type(item)):
        for source, n in item.records_by_source().items():
            counters[source][RECEIVED] += n


def entry(counters: Mapping[str, int], written: Mapping[str, int], sinks: list[str]) -> dict[str, Any]:
    """One source's ledger from its counters and what each of `sinks` (the
    record sinks it reaches) wrote of it."""
    c = counters
    by_reason = {k.split(":", 1)[1]: v for k, v in sorted(c.items()) if k.startswith(FAILED + ":")}
    pages = {
        "planned": c.get(PLANNED, 0),
        "fetched": c.get(FETCHED, 0),
        "failed": c.get(FAILED, 0),
        "failed_by_reason": by_reason,
        "abandoned": c.get(ABANDONED, 0),
        "not_attempted": c.get(NOT_ATTEMPTED, 0),
    }
    pages["unaccounted"] = pages["planned"] - pages["fetched"] - pages["failed"] - pages["abandoned"]
    settled = c.get(DEAD, 0) + c.get(DUPLICATES, 0) + c.get(FILTERED, 0)
    records = {
        "received": c.get(RECEIVED, 0),
        "dead_letters": c.get(DEAD, 0),
        "duplicates": c.get(DUPLICATES, 0),
        "filtered": c.get(FILTERED, 0),
        "written": {sink: written.get(sink, 0) for sink in sinks},
        "unaccounted": {sink: c.get(RECEIVED, 0) - settled - written.get(sink, 0) for sink in sinks},
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


def record_sinks(
    spec: Spec, wiring: dict[str, list[Edge]], upstream: dict[str, list[str]]
) -> dict[str, list[str]]:
    """For every source node, the record sinks its output reaches."""
    found: dict[str, list[str]] = {n: [] for n, node in spec.nodes.items() if node.stages[0].kind.is_source}
    for name, kinds in stage_inputs(spec, wiring).items():
        if spec.nodes[name].stages[-1].kind.is_sink and any(holds_records(k) for k in kinds[-1] or ()):
            for source in upstream.get(name, ()):
                found[source].append(name)
    return found


async def written(
    items: AsyncIterator[Any], sink: str, tally: defaultdict[str, defaultdict[str, int]]
) -> AsyncIterator[Any]:
    """The input of record sink `sink`, counting into `tally[source][sink]`
    the records of each item once the sink is done with it: when it asks for
    the next one (the last: when it asks past the end). An item the sink
    failed on is not counted."""
    held = None
    async for item in items:
        if held is not None:
            for source, n in held.records_by_source().items():
                tally[source][sink] += n
        held = item if holds_records(type(item)) else None
        yield item
    if held is not None:
        for source, n in held.records_by_source().items():
            tally[source][sink] += n
