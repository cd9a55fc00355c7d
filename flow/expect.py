"""A graph's `tests:` block, checked by `flow test` on a run of recorded traffic.

    tests:
      output: products                 # the node whose records are checked (default: the one
                                       # node whose main output feeds the graph's sinks)
      sources:                         # per source, from the run's ledger: a count, or [min, max]
        shop_a: {pages: 10, records: 200, dead_letters: [0, 5], duplicates: 0, failed_pages: 0}
      dead_letters: 0                  # over every source
      errors: 0                        # error records (pages failed for good, walks cut short)
      fields: [id, title, price]       # every output record has them, not null
      samples:                         # records the output must hold (these fields equal)
        - {id: "shop_a:1", price: 9.99}
      ledger: balanced                 # every page and record accounted for, nothing lost
      ignore: [timestamp]              # fields the snapshot leaves out, besides processed_at

Besides these, `flow test` compares the output records with the snapshot
beside the recording (`flow test --update` writes it), as a diff.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import msgspec

Count = int | tuple[int, int]  # exactly, or [min, max]


class _Base(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class SourceExpectation(_Base):
    pages: Count | None = None  # pages fetched
    failed_pages: Count | None = None
    records: Count | None = None  # records received
    dead_letters: Count | None = None
    duplicates: Count | None = None


class TestsSpec(_Base):
    output: str | None = None
    sources: dict[str, SourceExpectation] = {}
    dead_letters: Count | None = None
    errors: Count | None = None
    fields: list[str] = []
    samples: list[dict[str, Any]] = []
    ledger: Literal["balanced", "any"] = "balanced"
    ignore: list[str] = []  # besides IGNORED

    def __post_init__(self) -> None:
        counts = [("dead_letters", self.dead_letters), ("errors", self.errors)]
        for source, wanted in self.sources.items():
            counts += [(f"sources.{source}.{f}", getattr(wanted, f)) for f in wanted.__struct_fields__]
        for where, count in counts:
            if isinstance(count, tuple) and count[0] > count[1]:
                raise ValueError(f"{where}: [min, max] with min above max: {list(count)}")


IGNORED = ("processed_at",)  # left out of every snapshot: it changes every run

def records_of(item: Any) -> list[Any]:
    """The records an item holds (`records()`, for batches), else the item."""
    each = getattr(item, "records", None)
    return list(each()) if callable(each) else [item]


def plain(record: Any) -> Any:
    """A record as JSON values (a Struct, raw JSON text, ... as JSON has it)."""
    return msgspec.json.decode(msgspec.json.encode(record))


def canonical(records: Iterable[Any], ignore: Iterable[str]) -> list[str]:
    """Records (JSON values) as JSON lines without the ignored fields, `id`
    first and the other keys sorted, the lines sorted (so by id): a snapshot."""
    drop = {*IGNORED, *ignore}
    lines = []
    for built in records:
        if isinstance(built, dict):
            keys = sorted(k for k in built if k not in drop and k != "id")
            built = {**({"id": built["id"]} if "id" in built else {}), **{k: built[k] for k in keys}}
        lines.append(json.dumps(built, ensure_ascii=False))
    return sorted(lines)


def _within(count: Count, value: int) -> bool:
    return value == count if isinstance(count, int) else count[0] <= value <= count[1]


def _shown(count: Count) -> str:
    return str(count) if isinstance(count, int) else f"{count[0]}..{count[1]}"


def check(tests: TestsSpec, report: Mapping[str, Any], records: list[dict[str, Any]]) -> list[str]:
    """Every expectation that does not hold, as text `where: expected X, got Y`
    (more lines, for a sample: what differs in the closest record).
    `report`: the run's report (ledger, errors, losses); `records`: the output's."""
    failures: list[str] = []
    ledger = report["ledger"]

    def expect(where: str, count: Count | None, value: int) -> None:
        if count is not None and not _within(count, value):
            failures.append(f"{where}: expected {_shown(count)}, got {value}")

    for source, wanted in tests.sources.items():
        row = ledger.get(source)
        if row is None:
            failures.append(f"sources.{source}: no such source in the run (sources: {', '.join(ledger)})")
            continue
        pages, counted = row["pages"], row["records"]
        expect(f"sources.{source}.pages", wanted.pages, pages["fetched"])
        expect(f"sources.{source}.failed_pages", wanted.failed_pages, pages["failed"])
        expect(f"sources.{source}.records", wanted.records, counted["received"])
        expect(f"sources.{source}.dead_letters", wanted.dead_letters, counted["dead_letters"])
        expect(f"sources.{source}.duplicates", wanted.duplicates, counted["duplicates"])
    expect("dead_letters", tests.dead_letters, sum(r["records"]["dead_letters"] for r in ledger.values()))
    expect("errors", tests.errors, len(report["errors"]))
    for field in tests.fields:
        lacking = [r for r in records if not isinstance(r, dict) or r.get(field) is None]
        if lacking:
            some = f"{len(lacking)} of {len(records)} records"
            failures.append(f"fields: {some} lack '{field}', e.g. {_short(lacking[0])}")
    for i, sample in enumerate(tests.samples):
        failures += _sample(i, sample, records)
    if tests.ledger == "balanced":
        failures += [f"ledger: {loss}" for loss in report["lost"]]
    return failures


def _sample(i: int, sample: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    if any(all(r.get(k) == v for k, v in sample.items()) for r in records if isinstance(r, dict)):
        return []
    # The closest record: the most fields equal, to show what differs.
    best = max(records, key=lambda r: sum(r.get(k) == v for k, v in sample.items()), default=None)
    if best is None:
        return [f"samples[{i}]: no record holds {_short(sample)}: the output is empty"]
    diff = [f"  {k}: expected {v!r}, got {best.get(k)!r}" for k, v in sample.items() if best.get(k) != v]
    return ["\n".join([f"samples[{i}]: no record holds {_short(sample)}; the closest differs in", *diff])]


def snapshot_diff(expected: list[str], got: list[str], limit: int = 40) -> list[str]:
    """A unified diff of two snapshots (JSON lines), cut at `limit` lines."""
    lines = list(difflib.unified_diff(expected, got, "snapshot", "this run", lineterm="", n=0))
    return lines[:limit] + ([f"... {len(lines) - limit} more lines"] if len(lines) > limit else [])


def _short(value: Any, width: int = 120) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."
