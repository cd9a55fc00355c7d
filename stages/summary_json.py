"""`summary_json`: the run's dataset and report in one JSON file, streamed.

    {"products": [...], "errors": [...], "per_source": {...},
     "metrics": {"category_distribution": {...}},
     "summary": {"total_products", "processing_time_seconds", "success_rate", "sources"}}

Products are written as they arrive (nothing is held but per-source
aggregates); errors (page errors and dead letters, each with `endpoint`,
`error`, `timestamp` and its locating fields) and the summary follow when the
input ends. The file is written under a temporary name and renamed at the
end, so a reader never sees half a report; an interrupted run drains into it
and still gets a valid (partial) one.

success_rate = products written / (products written + dead letters): the share
of the distinct records received that made it into the dataset. Pages that
failed for good are listed in `errors`; their records were never received.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from flow.registry import Params, stage


class SummaryParams(Params):
    path: str = "summary.json"  # relative paths are under run.out
    dead_letters: str | None = None  # also write the dead letters as JSON lines here


class _Source:
    __slots__ = ("count", "maximum", "minimum", "total")

    def __init__(self) -> None:
        self.count, self.total, self.minimum, self.maximum = 0, 0.0, float("inf"), 0.0


@stage("summary_json", SummaryParams, consumes="products", produces=None)
async def summary_json(source: AsyncIterator[Any], params: SummaryParams, ctx: Any) -> AsyncIterator[Any]:
    """Write products, errors, per-source statistics and the summary to one JSON file."""
    encode = msgspec.json.Encoder().encode
    final = ctx.out_dir / params.path if not os.path.isabs(params.path) else params.path
    tmp_name = f".{os.path.basename(params.path)}.tmp"
    out = ctx.open_output(os.path.join(os.path.dirname(params.path), tmp_name))
    sources: defaultdict[str, _Source] = defaultdict(_Source)
    categories: Counter[str] = Counter()
    written = 0
    try:
        out.write(b'{"products": [')
        async for batch in source:
            for product in batch.products:
                out.write(b",\n" if written else b"\n")
                out.write(encode(product))
                written += 1
                s = sources[product.source]
                s.count += 1
                s.total += product.price
                s.minimum = min(s.minimum, product.price)
                s.maximum = max(s.maximum, product.price)
                categories[product.category] += 1
            yield batch
        resources = ctx.resources
        dead = resources.dead_letters
        errors = [e for e in getattr(resources, "errors", []) if e.get("error")]
        errors += [{**d, "error": "invalid_record", "detail": d.get("reason", "")} for d in dead]
        per_source = {
            name: {
                "products": s.count,
                "price_min": round(s.minimum, 2) if s.count else None,
                "price_avg": round(s.total / s.count, 2) if s.count else None,
                "price_max": round(s.maximum, 2) if s.count else None,
                "dead_letters": sum(1 for d in dead if d.get("endpoint") == name),
                **dict(resources.counters.get(name, {})),
            }
            for name, s in sorted(sources.items())
        }
        loop_now = asyncio.get_running_loop().time()
        elapsed = loop_now - resources.started_at if resources.started_at is not None else 0.0
        summary = {
            "total_products": written,
            "processing_time_seconds": round(elapsed, 3),
            "success_rate": round(written / (written + len(dead)), 4) if written + len(dead) else 1.0,
            "sources": sorted(sources),
        }
        windows = [w for node_windows in resources.windows.values() for w in node_windows]
        metrics: dict[str, Any] = {"category_distribution": dict(categories.most_common())}
        if windows:
            metrics["price_trends"] = [
                {
                    "start": round(w.start, 3),
                    "count": w.count,
                    "avg_price": w.price.avg if w.price else None,
                    "trend_percent": w.trend,
                }
                for w in windows
            ]
            metrics["windows"] = windows
        out.write(b"\n],\n")
        for key, value in (("errors", errors), ("per_source", per_source), ("metrics", metrics)):
            out.write(b'"%s": %s,\n' % (key.encode(), encode(value)))
        out.write(b'"summary": %s}\n' % encode(summary))
        if params.dead_letters:
            with ctx.open_output(params.dead_letters) as letters:
                for letter in dead:
                    letters.write(encode(letter) + b"\n")
        out.close()
        os.replace(ctx.out_dir / os.path.dirname(params.path) / tmp_name, final)
    finally:
        if not out.closed:
            out.close()


KIND = summary_json
