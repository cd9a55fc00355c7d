"""`window`: windowed metrics over the products passing through.

Products pass on unchanged. Windows are by processing time (`every`), by
event time (`time: timestamp`, a product field holding an ISO 8601 time,
with `every: 7d`), or by count (`count`); tumbling, or sliding with `slide`; one
series per value of `by` (a product field: `category`, `source`, ...), each
with its own trend. Each closed window (see .windows) goes out on the node's
`windows` side output (`from: NODE.windows`: `summary_json` reports them as
`metrics.windows` and `metrics.price_trends`), named by `name` (default
NODE#INDEX) so that several window stages stay apart, with ISO 8601 bounds,
and to a JSON-lines file when `path` is set.

Event time: the watermark is the latest event time seen less `lateness`,
moved after each batch; a window closes when the watermark reaches its end,
and the rest close when the input ends. A product is late when every window
covering its time ends at or before the watermark (whatever its key), and
untimed when its `time` field holds no readable time. Neither is in any window's figures: both
are counted (the node's `late` and `untimed` counters) and go out on the
node's `late` side output (copies, per batch and reason: .windows.Left),
never dropped silently. Set `lateness` to how far out of order the sources
deliver: merged sources walking their catalogues at their own pace can be
months apart.

Concurrency: the window state belongs to this stage's generator, which runs
in its node's single task, so nothing else touches it and no lock is needed.
"""

from __future__ import annotations

import functools
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from flow.registry import Params, stage
from flow.units import Duration

from .items import ProductBatch
from .product import Product, iso_utc
from .windows import Closed, Keyed, Left, Windows, WindowStats

FIELDS = frozenset(Product.__struct_fields__)


class WindowParams(Params):
    every: Duration | None = Duration.default(1)  # window length in time (processing, or event: `time`)...
    count: Annotated[int, msgspec.Meta(ge=1)] | None = None  # ...or in products (then `every` is ignored)
    slide: Duration | None = None  # sliding windows: the step, in seconds or products (default: tumbling)
    time: str | None = None  # event time: the product field holding it (e.g. timestamp); else processing
    by: str | None = None  # a window series per value of this product field (e.g. category, source)
    lateness: Duration = Duration.default(0)  # event time: how far behind the latest a product still counts
    name: str | None = None  # the windows' name in the outputs (default NODE#INDEX)
    path: str | None = None  # also write each closed window as a JSON line

    def __post_init__(self) -> None:
        if self.count is None and not self.every:
            raise ValueError("every: set a window length ('1s', '7d') or a count")
        for what in ("time", "by"):
            field = getattr(self, what)
            if field is not None and field not in FIELDS:
                fields = ", ".join(sorted(FIELDS))
                raise ValueError(f"{what}: {field!r} is no product field; one of: {fields}")
        if self.time is not None and self.count is not None:
            raise ValueError("time: event-time windows are by time (every), not count")


@stage(
    "window",
    WindowParams,
    consumes=ProductBatch,
    produces=ProductBatch,
    spans=False,
    outputs={"windows": WindowStats, "late": Left},
)
async def window(source: AsyncIterator[Any], params: WindowParams, ctx: Any) -> AsyncIterator[Any]:
    """Tumbling or sliding windows by processing time, event time or count, per
    key; price stats, category distribution, per-source throughput, trends."""
    import asyncio  # here: flow validate needs only the params

    from flow.tracing import provenance  # (OpenTelemetry) likewise

    clock = _Clock(params, asyncio.get_running_loop().time)
    keyed = Keyed(clock.windows)
    key_of = _getter(params.by)
    name = params.name or f"{ctx.node}#{ctx.index}"
    out = ctx.open_output(params.path) if params.path else None
    emit = _Emitter(ctx, clock, name, out)
    try:
        async for batch in source:
            left_out: dict[str, list[Any]] = {"late": [], "untimed": []}
            low, high = math.inf, -math.inf  # the batch's span, in the windows' units (tracing)
            for product in batch.products:
                at = clock.at(product)
                if at is None:
                    left_out["untimed"].append(product)
                    continue
                low, high = min(low, at), max(high, at)
                if clock.event_time:
                    # Into its windows ending after the watermark, whatever its key's state;
                    # with none (they ended, or it is out of range), it is late.
                    watermark = clock.current_watermark
                    if clock.late(at) or not keyed.place(key_of(product), at, product, watermark):
                        left_out["late"].append(product)
                    continue
                closed = keyed.advance(at)
                keyed.place(key_of(product), at, product)
                await emit(closed)
            if clock.event_time:
                await emit(keyed.advance(clock.watermark()))
            for reason, products in left_out.items():
                if products:
                    ctx.count(reason, len(products))
                    await ctx.emit("late", Left(name, reason, batch.endpoint, batch.page, products))
            if emit.recent is not None and low <= high:
                key = provenance(batch)
                if key is not None:
                    emit.recent.append((low, high, key))
            yield batch
        await emit(keyed.flush())
    finally:
        if out is not None:
            out.close()


class _Emitter:
    """Closed windows, named, to NODE.windows (and the `path` file). While
    tracing, each is also a span linked to the batches it covers: (lowest,
    highest time or number, provenance) of recent batches."""

    def __init__(self, ctx: Any, clock: _Clock, name: str, out: Any) -> None:
        self.ctx, self.clock, self.name, self.out = ctx, clock, name, out
        self.encode = msgspec.json.Encoder().encode
        self.recent: deque[tuple[float, float, Any]] | None = deque() if ctx.tracing else None

    async def __call__(self, closed: list[tuple[str | None, Closed]]) -> None:
        if not closed:
            return
        recent, ctx = self.recent, self.ctx
        if recent is not None:
            for _, w in closed:
                covers = list(dict.fromkeys(k for low, high, k in recent if low < w.end and high >= w.start))
                # A month of event time covers thousands of batches: the span links the
                # latest _LINKS of them (and says how many there were).
                attributes = {"flow.window.count": w.stats.count, "flow.window.batches": len(covers)}
                ctx.record_emit("window emit", covers[-_LINKS:], **attributes)
            if not self.clock.event_time:  # in order: nothing before the oldest closed window is needed
                horizon = min(w.start for _, w in closed)
                while recent and recent[0][1] < horizon:
                    recent.popleft()
            while len(recent) > _RECENT:  # event time comes in any order: the newest batches
                recent.popleft()
        for key, w in closed:
            stats = self.clock.named(w, name=self.name, key=key, node=ctx.node)
            if self.out is not None:
                self.out.write(self.encode(stats) + b"\n")
            await ctx.emit("windows", stats)


_RECENT = 4096  # batches remembered for the windows' span links (tracing, event time)
_LINKS = 8  # links a window's span has at most


class _Clock:
    """Where a product falls: its event time, processing time, or number."""

    def __init__(self, params: WindowParams, loop_time: Callable[[], float]) -> None:
        self.event_time = params.time is not None
        self.by_count = params.count is not None
        self.length = float(params.count if self.by_count else params.every)  # type: ignore[arg-type]
        self.slide = None if params.slide is None else float(params.slide)
        self.lateness = float(params.lateness)
        self._loop_time = loop_time
        self._started = loop_time()
        self._wall = time.time() - self._started  # loop time -> Unix time
        self._seen = 0
        self._latest = self._watermark = -math.inf
        self._field = _getter(params.time) if params.time else None
        self.time = params.time or ("count" if self.by_count else "processing")
        self.by_category = params.by == "category"

    def windows(self) -> Windows:
        if self.by_count:
            by, start = "count", 0.0
        elif self.event_time:  # aligned to the epoch
            by, start = "event", 0.0
        else:
            by, start = "time", self._started
        return Windows(self.length, self.slide, by=by, start=start, categories=not self.by_category)

    def now(self) -> float:
        return float(self._seen) if self.by_count else self._loop_time()

    def at(self, product: Any) -> float | None:
        if self.by_count:
            self._seen += 1
            return float(self._seen - 1)
        if self._field is None:
            return self._loop_time()
        at = _seconds(self._field(product))
        if at is None or not _EARLIEST + self.length <= at <= _LATEST - self.length:
            return None  # untimed: no readable time, or its windows' bounds would leave the calendar
        if at > self._latest:
            self._latest = at
        return at

    def watermark(self) -> float:
        """The latest event time seen, less the lateness: no window ending at
        or before it takes more products (set after each batch)."""
        self._watermark = self._latest - self.lateness
        return self._watermark

    @property
    def current_watermark(self) -> float:
        return self._watermark

    def late(self, at: float) -> bool:
        """Whether every window covering `at` ended at or before the watermark."""
        slide = self.slide or self.length
        return math.floor(at / slide) * slide + self.length <= self._watermark

    def named(self, closed: Closed, *, name: str, key: str | None, node: str) -> WindowStats:
        if self.by_count:
            bounds: dict[str, Any] = {"first": int(closed.start), "last": int(closed.end)}
        else:
            shift = 0.0 if self.event_time else self._wall
            bounds = {"start": iso_utc(closed.start + shift), "end": iso_utc(closed.end + shift)}
        return msgspec.structs.replace(closed.stats, name=name, key=key, node=node, time=self.time, **bounds)


def _getter(field: str | None) -> Callable[[Any], Any]:
    if field is None:
        return _none

    def value(product: Any) -> Any:
        found = getattr(product, field)
        return None if found is None else str(found)

    return value


def _none(product: Any) -> None:
    return None


@functools.lru_cache(maxsize=8192)
def _seconds(value: str | None) -> float | None:
    """An ISO 8601 time as Unix seconds (no offset: UTC); None if it is none.
    Cached: products share their times' text (a page's records, the mocks)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    seconds = (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).timestamp()
    return seconds if _EARLIEST <= seconds <= _LATEST else None  # windows' bounds must stay writable


_EARLIEST, _LATEST = -62_000_000_000.0, 250_000_000_000.0  # about year 5 to year 9900
KIND = window
