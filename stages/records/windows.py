"""Windows over a stream of products: tumbling or sliding, by time or count,
one series per key.

`Windows(length, slide, by)` is plain synchronous logic for one key:
`place(at, product)` files a product into every window that covers `at` (a
time in seconds, event or processing time, or the product's sequence number
when counting) and says False when every such window is already closed (the
product is late); `advance(at)` closes the windows that end at or before
`at` and returns them; `flush()` closes the rest. With slide == length the
windows tumble; with slide < length they overlap:

    length 4, slide 2:   [0, 4)    [2, 6)    [4, 8) ...
    at 3 ->              [0, 4) and [2, 6)

Time windows are aligned to `start` (the Unix epoch for event time: a 7d
window starts on a Thursday, 00:00 UTC, as in Flink and Beam). `Keyed` keeps
a `Windows` per value of a product field (`by: category`) and closes them all
at one time (the watermark).

Each closed window becomes a `WindowStats`: count, price min/avg/max/p50/p95
overall and per category, the category distribution, products per source
and per second (throughput), and the trend: the change of the average price
against the same key's previous window. Memory per open window is bounded:
count, sum, min and max are exact; the percentiles come from a uniform
sample of at most SAMPLE prices (exact up to that many).
"""

from __future__ import annotations

import math
import random
from array import array
from collections import Counter, defaultdict
from typing import Any

import msgspec

SAMPLE = 1024  # prices kept per window and category for its percentiles (8 bytes each)


class PriceStats(msgspec.Struct, frozen=True):
    count: int
    min: float
    avg: float
    max: float
    p50: float
    p95: float


class WindowStats(msgspec.Struct, frozen=True, omit_defaults=True):
    """A closed window: `NODE.windows` items."""

    name: str  # the window stage's `name`, else NODE#INDEX
    start: str | None  # ISO 8601 (time windows: event or processing time)
    end: str | None
    count: int
    price: PriceStats | None
    by_category: dict[str, PriceStats]
    category_distribution: dict[str, int]
    per_source: dict[str, int]
    throughput: dict[str, float] = {}  # products per second per source (processing-time windows)
    trend: float | None = None  # avg price change vs this key's previous closed window, in percent
    key: str | None = None  # the value of the `by` field this window is for
    time: str = "processing"  # what start and end are: "processing" or the event-time field
    first: int | None = None  # count windows: the numbers of the first product and of the one after
    last: int | None = None
    node: str = ""  # the node whose window stage closed it


class Left(msgspec.Struct, frozen=True):
    """Products of one batch that a window stage counted in no window:
    `NODE.late` items. Copies for inspection (the products themselves pass
    on), so no record sink counts them (flow.ledger follows main edges)."""

    name: str  # the window stage's name
    reason: str  # "late": every window for its time had closed; "untimed": it has no time
    endpoint: str
    page: int
    products: list[Any]


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def price_stats(prices: list[float]) -> PriceStats | None:
    figures = Figures()
    for price in prices:
        figures.add(price)
    return figures.stats()


class Figures:
    """Price figures of one window (and category): exact count, sum, min,
    max; a uniform sample (reservoir) of at most SAMPLE prices."""

    __slots__ = ("count", "high", "low", "rng", "sample", "total")

    def __init__(self) -> None:
        self.count, self.total, self.low, self.high = 0, 0.0, math.inf, -math.inf
        self.sample = array("d")
        self.rng: random.Random | None = None  # made when the sample is full (seeded: runs agree)

    def add(self, price: float) -> None:
        self.count += 1
        self.total += price
        self.low = min(self.low, price)
        self.high = max(self.high, price)
        if len(self.sample) < SAMPLE:
            self.sample.append(price)
            return
        if self.rng is None:
            self.rng = random.Random(SAMPLE)
        slot = self.rng.randrange(self.count)
        if slot < SAMPLE:
            self.sample[slot] = price

    def stats(self) -> PriceStats | None:
        if not self.count:
            return None
        ordered = sorted(self.sample)
        avg = round(self.total / self.count, 2)
        p50, p95 = percentile(ordered, 50), percentile(ordered, 95)
        return PriceStats(self.count, self.low, avg, self.high, p50, p95)


class _Open:
    __slots__ = ("by_category", "category", "overall", "sources")

    def __init__(self) -> None:
        self.category = ""  # a series keyed by category: its one category
        self.overall = Figures()
        self.by_category: defaultdict[str, Figures] = defaultdict(Figures)
        self.sources: Counter[str] = Counter()


class Closed:
    """A closed window before it is named: its bounds in the windows' own
    units (seconds, or product numbers) and its figures (also read through
    it: `closed.count`)."""

    __slots__ = ("end", "start", "stats")

    def __init__(self, start: float, end: float, stats: WindowStats) -> None:
        self.start, self.end, self.stats = start, end, stats

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stats, name)


class Windows:
    def __init__(
        self, length: float, slide: float | None = None, *, by: str = "time", start: float = 0.0,
        categories: bool = True,
    ) -> None:  # fmt: skip
        """`categories` False: a series of one category (keyed by it), whose
        per-category figures are its overall ones (kept once)."""
        if length <= 0 or (slide is not None and not 0 < slide <= length):
            raise ValueError("a window needs length > 0 and 0 < slide <= length")
        self.length, self.slide, self.by, self.start = length, slide or length, by, start
        self.categories = categories
        self._open: dict[int, _Open] = {}  # window number -> contents
        self._previous_avg: float | None = None
        self._next_to_close: int | None = None  # None: nothing placed or closed yet
        self.due = math.inf  # the earliest end of an open window (kept in event time)

    def _numbers(self, at: float) -> range:
        """Window numbers k with start + k*slide <= at < start + k*slide + length."""
        offset = at - self.start
        last = math.floor(offset / self.slide)
        first = math.floor((offset - self.length) / self.slide) + 1
        # Processing time and counts: no window starts before the stream did.
        return range(first if self.by == "event" else max(0, first), last + 1)

    def place(self, at: float, product: Any, after: float = -math.inf) -> bool:
        """File `product` at `at` into its open windows that end after
        `after` (event time: the watermark); False if there is none (late:
        counted in none)."""
        placed, horizon, opened = False, self._next_to_close, self._open
        start, slide, length = self.start, self.slide, self.length
        for number in self._numbers(at):
            end = start + number * slide + length
            if (horizon is not None and number < horizon) or end <= after:
                continue
            placed = True
            window = opened.get(number)
            if window is None:
                window = opened[number] = _Open()
                self.due = min(self.due, end)
            window.overall.add(product.price)
            if self.categories:
                window.by_category[product.category].add(product.price)
            else:
                window.category = product.category
            window.sources[product.source] += 1
        return placed

    def add(self, at: float, product: Any) -> list[Closed]:
        """Processing time and counts: close what `at` has moved past, then place."""
        closed = self.advance(at)
        self.place(at, product)
        return closed

    def advance(self, at: float) -> list[Closed]:
        """Close every window that ends at or before `at`: in event time the
        windows that hold products (a time far off must not make a window of
        every step on the way), else every window in order, empty ones too."""
        if self.by == "event":
            closed = []
            if at >= self.due:  # else nothing open ends yet (the common case: checked per batch)
                closed = [self._close(n) for n in sorted(n for n in self._open if self._end(n) <= at)]
                self.due = min((self._end(n) for n in self._open), default=math.inf)
            after = math.floor((at - self.start - self.length) / self.slide) + 1  # the first that ends later
            self._next_to_close = after if self._next_to_close is None else max(self._next_to_close, after)
            return closed
        closed: list[Closed] = []
        number = self._next_to_close
        if number is None:  # nothing closed yet: from the first window opened, if it ended
            if not self._open or self._end(min(self._open)) > at:
                return closed
            number = min(self._open)
        while self._end(number) <= at:
            closed.append(self._close(number))
            number += 1
        return closed

    def _end(self, number: int) -> float:
        return self.start + number * self.slide + self.length

    def flush(self) -> list[Closed]:
        """Close the windows still open (the stream ended)."""
        closed: list[Closed] = []
        if self.by == "event":
            return [self._close(n) for n in sorted(self._open)]
        if self._next_to_close is None:
            if not self._open:
                return closed
            self._next_to_close = min(self._open)
        last = max(self._open, default=self._next_to_close - 1)
        while self._next_to_close <= last:
            closed.append(self._close(self._next_to_close))
        return closed

    def _close(self, number: int) -> Closed:
        window = self._open.pop(number, None) or _Open()
        self._next_to_close = number + 1
        start = self.start + number * self.slide
        overall = window.overall.stats()
        trend = None
        if overall is not None:
            if self._previous_avg:
                trend = round((overall.avg - self._previous_avg) / self._previous_avg * 100, 2)
            self._previous_avg = overall.avg
        throughput = (
            {source: round(n / self.length, 3) for source, n in sorted(window.sources.items())}
            if self.by == "time"
            else {}
        )
        by_category = window.by_category if self.categories else {window.category: window.overall}
        stats = WindowStats(
            name="",
            start=None,
            end=None,
            count=window.overall.count,
            price=overall,
            by_category={c: s for c, f in sorted(by_category.items()) if (s := f.stats())},
            category_distribution=dict(
                Counter({c: f.count for c, f in by_category.items() if f.count}).most_common()
            ),
            per_source=dict(sorted(window.sources.items())),
            throughput=throughput,
            trend=trend,
        )
        return Closed(start, start + self.length, stats)


class Keyed:
    """A `Windows` per key, made on the key's first product, closed together."""

    def __init__(self, make: Any) -> None:
        self._make = make
        self.windows: dict[str | None, Windows] = {}

    def place(self, key: str | None, at: float, product: Any, after: float = -math.inf) -> bool:
        found = self.windows.get(key)
        if found is None:
            found = self.windows[key] = self._make()
        return found.place(at, product, after)

    def advance(self, at: float) -> list[tuple[str | None, Closed]]:
        closed = [(key, c) for key, w in self.windows.items() for c in w.advance(at)]
        return sorted(closed, key=_by_start_and_key) if closed else closed

    def flush(self) -> list[tuple[str | None, Closed]]:
        return sorted(((key, c) for key, w in self.windows.items() for c in w.flush()), key=_by_start_and_key)


def _by_start_and_key(pair: tuple[str | None, Closed]) -> tuple[float, str]:
    return pair[1].start, pair[0] or ""
