"""`summary_json`: the run's dataset and report in one JSON file, streamed.

    {"products": [...], "errors": [...], "per_source": {...},
     "metrics": {"category_distribution": {...}, "price_trends": [...], "windows": [...]},
     "summary": {"total_products", "processing_time_seconds", "success_rate", "sources"}}

What it reports arrives through the graph: product batches, and whatever
side outputs the node reads (`*.errors`, `*.dead_letters`, `NODE.windows`).
Products are written as they arrive; errors and dead letters (each with
`endpoint`, `error`, `timestamp` and its locating fields), closed windows
and their price trends are spilled to temporary files as they arrive and
copied in at the end, so memory holds only per-source and per-category
aggregates (count, sum, min, max: no per-product state), however many
products, errors or windows come. The file is written under a temporary
name and renamed at the end, so a reader never sees half a report; an
interrupted run drains into it and still gets a valid (partial) one.

success_rate = products written / (products written + dead letters + the
records of pages that failed for good or were never asked for after a walk
gave up, each page at its expected size): the share of what the sources hold
that made it into the dataset, as far as the sources' totals tell.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any, BinaryIO

import msgspec

from flow.items import DeadLetter, ErrorRecord
from flow.registry import Params, stage

from .items import SOURCE, ProductBatch
from .windows import WindowStats


class SummaryParams(Params):
    path: str = "summary.json"  # relative paths are under run.out
    dead_letters: str | None = None  # also write the dead letters it receives as JSON lines here


class _Source:
    __slots__ = ("count", "dead", "maximum", "minimum", "total")

    def __init__(self) -> None:
        self.count, self.total, self.minimum, self.maximum, self.dead = 0, 0.0, float("inf"), 0.0, 0


class _Spill:
    """A JSON array's items, written to an anonymous file as they come and
    copied into the report at the end: memory stays flat however many."""

    def __init__(self, file: BinaryIO, separator: bytes, first: bytes = b"") -> None:
        self.file, self.separator, self.first, self.count = file, separator, first, 0

    def add(self, item: bytes) -> None:
        self.file.write((self.separator if self.count else self.first) + item)
        self.count += 1

    def copy_to(self, out: BinaryIO) -> None:
        self.file.seek(0)
        shutil.copyfileobj(self.file, out)


class _Report:
    """What the summary adds up while products stream through: per-source
    and per-category aggregates; errors, dead letters and windows spilled."""

    def __init__(self, spill: Callable[[], BinaryIO], letters: BinaryIO | None) -> None:
        self.sources: defaultdict[str, _Source] = defaultdict(_Source)
        self.categories: Counter[str] = Counter()
        self.written = self.dead = 0
        self.failures = 0  # error records (pages or items that failed for good)
        self.records_lost = 0  # what the failed pages would have held, at their expected size
        # errors one per line as before; windows and trends compact, as one encode() wrote them
        self.errors = _Spill(spill(), b",\n", b"\n")
        self.windows, self.trends = _Spill(spill(), b","), _Spill(spill(), b",")
        self.letters = letters
        self.encode = msgspec.json.Encoder().encode

    def products(self, products: list[Any]) -> None:
        """Add a batch: per run of products of one source (a batch is one
        source's page, or after dedupe a few runs), its prices at once."""
        self.written += len(products)
        self.categories.update([product.category for product in products])
        for source, run in itertools.groupby(products, SOURCE):
            prices = [product.price for product in run]
            s = self.sources[source]
            s.count += len(prices)
            s.total += sum(prices)
            s.minimum = min(s.minimum, *prices)
            s.maximum = max(s.maximum, *prices)

    def side(self, item: Any) -> None:
        """An error, dead letter or window that reached the sink."""
        if isinstance(item, WindowStats):
            self.windows.add(self.encode(item))
            trend = {
                "window": item.name,
                "key": item.key,
                "start": item.start if item.start is not None else item.first,
                "end": item.end if item.end is not None else item.last,
                "count": item.count,
                "avg_price": item.price.avg if item.price else None,
                "trend_percent": item.trend,
            }
            self.trends.add(self.encode(trend))
            return
        if isinstance(item, DeadLetter):
            self.dead += 1
            self.sources[item.endpoint].dead += 1
            entry = {**msgspec.structs.asdict(item), "error": "invalid_record", "detail": item.reason}
            if self.letters is not None:
                self.letters.write(self.encode(item) + b"\n")
        else:
            entry = item.to_dict()
            self.failures += 1
            self.records_lost += item.fields.get("records_expected") or 0
        self.errors.add(self.encode(entry))


@stage(
    "summary_json",
    SummaryParams,
    consumes=(ProductBatch, ErrorRecord, DeadLetter, WindowStats),
    produces=None,
    fan_in=True,
    whole=True,
)
async def summary_json(source: AsyncIterator[Any], params: SummaryParams, ctx: Any) -> AsyncIterator[Any]:
    """Write products, errors, per-source statistics and the summary to one JSON file."""
    final = ctx.output_path(params.path)
    final.parent.mkdir(parents=True, exist_ok=True)
    # An earlier run's report must not stand beside this run's run.json if
    # this one is cut short before its report is whole.
    final.unlink(missing_ok=True)
    with contextlib.ExitStack() as files:
        # Written under a temporary name, renamed when complete; errors, dead
        # letters and windows spill to anonymous files until the products are out.
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
        files.callback(_discard, tmp)
        out = files.enter_context(os.fdopen(fd, "wb"))

        def spill() -> BinaryIO:
            return files.enter_context(tempfile.TemporaryFile(dir=final.parent))

        letters = ctx.open_output(params.dead_letters) if params.dead_letters else None
        if letters is not None:
            files.enter_context(letters)
        report = _Report(spill, letters)
        async for item in _write(source, out, report, ctx):
            yield item
        out.close()
        os.replace(tmp, final)


async def _write(source: AsyncIterator[Any], out: BinaryIO, report: _Report, ctx: Any) -> AsyncIterator[Any]:
    """Products as they come, side items to the report; then the rest."""
    encode = report.encode
    out.write(b'{"products": [')
    async for item in source:
        if isinstance(item, ProductBatch):
            if item.products:  # one product per line
                out.write(b",\n" if report.written else b"\n")
                out.write(b",\n".join(map(encode, item.products)))
                report.products(item.products)
        else:
            report.side(item)
        yield item
    out.write(b'\n],\n"errors": [')
    report.errors.copy_to(out)
    out.write(b'\n],\n"per_source": %s,\n' % encode(_per_source(report, ctx)))
    # "metrics" as encode() wrote the whole dict: compact, windows last
    categories = dict(report.categories.most_common())
    out.write(b'"metrics": {"category_distribution":%s' % encode(categories))
    if report.windows.count:
        for name, spill in (("price_trends", report.trends), ("windows", report.windows)):
            out.write(b',"%s":[' % name.encode())
            spill.copy_to(out)
            out.write(b"]")
    out.write(b"},\n")
    out.write(b'"summary": %s}\n' % encode(_summary(report, ctx)))


def _discard(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _ledger(name: str, s: _Source, ctx: Any) -> dict[str, Any]:
    """One source's row: the engine's counters (pages, records, retries, ...;
    `normalized`: products made before dedupe and filters), what this report
    holds of it (`products`: written here), and its ledger (flow.ledger),
    as far as this report is concerned."""
    counters = ctx.counters(name)
    counters["normalized"] = counters.pop("products", 0)
    counters.pop("dead_letters", 0)  # in the ledger: all of the source's (this report may not get them all)
    return {
        **counters,
        "products": s.count,
        "price_min": round(s.minimum, 2) if s.count else None,
        "price_avg": round(s.total / s.count, 2) if s.count else None,
        "price_max": round(s.maximum, 2) if s.count else None,
        "dead_letters": s.dead,
        "ledger": ctx.ledger(name),
    }


def _per_source(report: _Report, ctx: Any) -> dict[str, Any]:
    """One row per source, once the input has ended. Every source node of
    the graph has a row, a silent one too."""
    for name in ctx.sources:
        report.sources.setdefault(name, _Source())
    return {name: _ledger(name, s, ctx) for name, s in sorted(report.sources.items())}


def _unseen(ledger: dict[str, Any]) -> int:
    """Records of a source lost without an error record that says how many:
    pages not attempted or abandoned (at the size its pages came in) and
    anything unaccounted at this report."""
    pages, records = ledger["pages"], ledger["records"]
    per_page = records["received"] / pages["fetched"] if pages["fetched"] else 0
    unaccounted = records["unaccounted"] if isinstance(records["unaccounted"], int) else 0
    unasked = pages["not_attempted"] + pages["abandoned"] + max(0, pages["unaccounted"])
    return round(unasked * per_page) + max(0, unaccounted)


def _summary(report: _Report, ctx: Any) -> dict[str, Any]:
    import asyncio  # here: flow validate needs only the params

    loop_now = asyncio.get_running_loop().time()
    elapsed = loop_now - ctx.started_at if ctx.started_at is not None else 0.0
    written, dead = report.written, report.dead
    # Silent: a source feeding this report that received nothing at all (its
    # records were not deduplicated away: none came).
    silent = [n for n in ctx.sources if not report.sources[n].count and not ctx.counters(n).get("records")]
    unseen = sum(_unseen(ctx.ledger(name)) for name in ctx.sources)
    lost = report.records_lost + unseen
    if not written:
        status = "failed"
    elif ctx.stopped or report.failures or silent or unseen:
        status = "partial"
    else:
        status = "complete"
    return {
        "status": status,
        "total_products": written,
        "processing_time_seconds": round(elapsed, 3),
        "success_rate": round(written / (written + dead + lost), 4) if written + dead + lost else 1.0,
        "sources": sorted(report.sources),
    }


KIND = summary_json
