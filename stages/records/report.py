"""`report`: the run as one self-contained HTML page, for people.

Reads product batches and whatever side outputs its node reads (closed
windows, errors, dead letters), and writes, when its input ends, one HTML
file (atomically) with no script, no external resource (its Content-Security-
Policy allows neither) and every chart as inline SVG (.charts):

    price trends    a small chart per key of each keyed window series (per
                    category over event time, in the default graph): the
                    average price per window, its change over the series
    categories      products per category (the distribution)
    sources         the per-source ledger: pages, records, products, dead
                    letters, duplicates, retries, breaker openings
    errors          errors by reason, and dead letters by reason
    requests        per endpoint, requests per second against its rate
                    limit, retries, 429 answers, and when its breaker was open
                    (the run's timeline: ctx.timeline)

Memory: counts per category, source and reason, and three numbers per
closed window that held products (per key: a handful over event time; one a
second over processing time); no product is held.
"""

from __future__ import annotations

import operator
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from html import escape
from typing import Any

from flow.items import DeadLetter, ErrorRecord, utc_now
from flow.registry import Params, stage

from ._files import written_whole
from .charts import PALETTE, bar_chart, change, line_chart, timeline_chart
from .items import SOURCE, ProductBatch, ProductTally
from .windows import WindowStats

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;color:#222;margin:24px auto;max-width:1040px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:12px 0 6px}
.facts{color:#555;margin:0 0 8px}.grid{display:flex;flex-wrap:wrap;gap:12px}.grid figure{width:302px}
figure{margin:0;border:1px solid #eee;border-radius:6px;padding:6px}figcaption{font-size:12px;color:#444}
table{border-collapse:collapse;font-size:13px}
th,td{padding:4px 8px;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}.ok{color:#009E73}.bad{color:#D55E00}
"""


_CATEGORY = operator.attrgetter("category")


class ReportParams(Params):
    path: str = "report.html"  # relative paths are under run.out
    title: str = "flow run report"


class _Gathered:
    def __init__(self) -> None:
        self.categories: Counter[str] = Counter()
        self.products: Counter[str] = Counter()
        # (window name, key) -> start (Unix seconds or product number) -> [sum of prices, prices, products];
        # one window closed in several shards (a cluster run) is one point, their figures added
        self.windows: defaultdict[tuple[str, str | None], dict[float, list[float]]] = defaultdict(dict)
        self.kinds: dict[str, str] = {}  # window name -> its time: an event-time field, processing, count
        self.errors: Counter[str] = Counter()
        self.dead: Counter[str] = Counter()

    def add(self, item: Any) -> None:
        if isinstance(item, ProductBatch):
            self.categories.update(map(_CATEGORY, item.products))  # counted in C, not per product here
            self.products.update(map(SOURCE, item.products))
        elif isinstance(item, ProductTally):  # a batch's counts, from a shard (cluster runs)
            self.categories.update(item.categories)
            self.products.update(item.sources)
        elif isinstance(item, WindowStats):
            if item.price is not None:  # a point: where it starts, its average, how many
                self.kinds[item.name] = item.time
                point = self.windows[(item.name, item.key)].setdefault(_position(item), [0.0, 0, 0])
                point[0] += item.price.avg * item.price.count
                point[1] += item.price.count
                point[2] += item.count
        elif isinstance(item, DeadLetter):
            self.dead[item.reason.split(" (")[0]] += 1
        elif isinstance(item, ErrorRecord):
            self.errors[item.error] += 1


def _digest(item: Any) -> Any:
    """What of an item crosses from a shard to the driver: a batch's counts."""
    return ProductTally.of(item) if isinstance(item, ProductBatch) else item


@stage("report", ReportParams, consumes=(ProductBatch, ProductTally, WindowStats, ErrorRecord, DeadLetter),
       produces=None, fan_in=True, whole=True, driver=True, digest=_digest)  # fmt: skip
async def report(source: AsyncIterator[Any], params: ReportParams, ctx: Any) -> AsyncIterator[Any]:
    """Write the run as one HTML page: price trends, categories, sources, errors, requests."""
    gathered = _Gathered()
    with written_whole(ctx, params.path) as tmp:
        async for item in source:
            gathered.add(item)
            yield item
        tmp.write_text(_page(params, gathered, ctx), encoding="utf-8")


def _page(params: ReportParams, g: _Gathered, ctx: Any) -> str:
    total = sum(g.categories.values())
    stopped = f"stopped: {ctx.stopped}" if ctx.stopped else "ran to its end"
    run = f"run {escape(ctx.run_id or '-')} of {escape(str(ctx.graph))}"
    facts = f"{run} · {utc_now()} · {total:,} products · {stopped}"
    sections = [
        f"<header><h1>{escape(params.title)}</h1><p class='facts'>{facts}</p></header>",
        _trends(g),
        "<section id='categories'><h2>Category distribution</h2>"
        + bar_chart("Products per category", g.categories.most_common(), x_title="products")
        + "</section>",
        _sources(g, ctx),
        _errors(g),
        _requests(ctx),
    ]
    body = "\n".join(sections)
    return (
        f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        # Nothing to run and nothing to fetch: the page is whole as written.
        "<meta http-equiv='Content-Security-Policy' "
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(params.title)}</title><style>{_STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


_AXES = {
    "processing": "seconds since the first window (processing time)",
    "count": "product number (window start)",
}


def _position(w: WindowStats) -> float:
    if w.start is not None:
        return datetime.fromisoformat(w.start).timestamp()
    return float(w.first or 0)


def _trends(g: _Gathered) -> str:
    parts = ["<section id='trends'><h2>Price trends</h2>"]
    if not g.windows:
        parts.append("<p>No window with products reached this report (<code>NODE.windows</code>).</p>")
    for name in sorted(g.kinds):
        kind = g.kinds[name]
        event = kind not in _AXES
        heading = f"{escape(name)}: average price per window ({'event time: ' + kind if event else kind})"
        parts.append(f"<h3>{heading}</h3><div class='grid'>")
        keys = sorted((key for n, key in g.windows if n == name), key=lambda k: k or "")
        for i, key in enumerate(keys):
            series = sorted(g.windows[(name, key)].items())
            windows = [(at, total / n, int(count)) for at, (total, n, count) in series]
            origin = 0.0 if event or kind == "count" else windows[0][0]
            points = [(at - origin, avg, _tip(kind, at, avg, n)) for at, avg, n in windows]
            label = key or "all"
            moved = change(points[0][1], points[-1][1]) if len(points) > 1 else "n/a"
            axis = "event time (window start, UTC)" if event else _AXES[kind]
            chart = line_chart(f"{name} · {label}: average price", points, y_title="average price",
                               color=PALETTE[i % len(PALETTE)], dates=event, x_title=axis)  # fmt: skip
            caption = f"<b>{escape(label)}</b>: {moved} from the first window to the last ({len(points)})"
            parts.append(_figure(label, chart, caption))
        parts.append("</div>")
    parts.append("</section>")
    return "".join(parts)


def _tip(kind: str, at: float, avg: float, count: int) -> str:
    if kind == "count":
        where = f"from product {at:.0f}"
    else:
        moment = datetime.fromtimestamp(at, UTC)
        where = moment.strftime("%H:%M:%S") if kind == "processing" else moment.strftime("%Y-%m-%d")
    return f"{where}: avg {avg:,.2f} over {count} products"


def _sources(g: _Gathered, ctx: Any) -> str:
    columns = ("source", "pages fetched / planned", "failed", "records", "products here", "dead letters",
               "duplicates", "retries", "breaker openings", "unaccounted")  # fmt: skip
    head = "<tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>"
    rows = []
    for name in sorted(set(ctx.sources) | set(g.products)):
        row = ctx.ledger(name)
        pages, records, counters = row["pages"], row["records"], ctx.counters(name)
        unaccounted = records["unaccounted"]
        lost = unaccounted if isinstance(unaccounted, int) else sum(unaccounted.values())
        mark = "ok" if not lost and not pages["failed"] else "bad"
        cells = (f"{pages['fetched']} / {pages['planned']}", pages["failed"], records["received"],
                 g.products.get(name, 0), records["dead_letters"], records["duplicates"],
                 counters.get("retry", 0), counters.get("breaker_open", 0))  # fmt: skip
        tds = "".join(f"<td>{c}</td>" for c in cells)
        rows.append(f"<tr><td>{escape(name)}</td>{tds}<td class='{mark}'>{lost}</td></tr>")
    return f"<section id='sources'><h2>Sources</h2><table>{head}{''.join(rows)}</table></section>"


def _errors(g: _Gathered) -> str:
    return (
        "<section id='errors'><h2>Errors and dead letters</h2>"
        + bar_chart("Errors by reason", g.errors.most_common(), x_title="error records", color=PALETTE[1])
        + bar_chart("Dead letters by reason", g.dead.most_common(12), x_title="dead letters",
                    color=PALETTE[3])
        + "</section>"
    )


def _requests(ctx: Any) -> str:
    timeline = ctx.timeline()
    requests = timeline.get("requests", {})
    limits = {attrs.get("flow.endpoint"): value for attrs, value in ctx.gauges("flow.rate_limit")}
    opened = _breaker_spans(ctx)
    parts = ["<section id='requests'><h2>Requests per second</h2>"]
    if not requests:
        parts.append("<p>No HTTP request in this run.</p>")
    for endpoint in sorted(requests):
        chart = timeline_chart(
            f"{endpoint}: requests per second", requests[endpoint], limit=limits.get(endpoint),
            retries=timeline.get("retry", {}).get(endpoint, []),
            throttled=timeline.get("throttled", {}).get(endpoint, []), open_spans=opened.get(endpoint, []),
        )  # fmt: skip
        sent = sum(requests[endpoint])
        caption = f"<b>{escape(endpoint)}</b>: {sent} requests; dashed: the rate limit; orange: retries; " \
            "shaded: breaker open"
        parts.append(_figure(endpoint, chart, caption))
    parts.append("</section>")
    return "".join(parts)


def _figure(key: str, chart: str, caption: str) -> str:
    return f"<figure data-key='{escape(key)}'>{chart}<figcaption>{caption}</figcaption></figure>"


def _breaker_spans(ctx: Any) -> dict[str, list[tuple[float, float]]]:
    """endpoint -> (from, to) seconds since the run started while its breaker was open."""
    import asyncio

    if ctx.started_at is None:
        return {}
    started_wall = time.time() - (asyncio.get_running_loop().time() - ctx.started_at)
    now = time.time() - started_wall
    spans: dict[str, list[tuple[float, float]]] = {}
    opened: dict[str, float] = {}
    for event in ctx.events():
        if event.get("event") != "breaker":
            continue
        at = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).replace(tzinfo=UTC).timestamp()
        endpoint, second = event.get("endpoint", ""), at - started_wall
        if event.get("new") == "open":
            opened.setdefault(endpoint, second)
        elif endpoint in opened:
            spans.setdefault(endpoint, []).append((opened.pop(endpoint), second))
    for endpoint, second in opened.items():
        spans.setdefault(endpoint, []).append((second, now))
    return spans


KIND = report
