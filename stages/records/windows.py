"""Windows over a stream of products: tumbling or sliding, by time or count.

`Windows(length, slide, by)` is plain synchronous logic: `add(key, product)`
files a product into every window that covers `key` (a processing time, or
the product's sequence number when counting) and returns the windows that
the key has moved past, closed; `flush()` closes the rest. With slide ==
length the windows tumble; with slide < length they overlap:

    length 4, slide 2:   [0, 4)    [2, 6)    [4, 8) ...
    key 3 ->             [0, 4) and [2, 6)

Each closed window becomes a `WindowStats`: count, price min/avg/max/p50/p95
overall and per category, the category distribution, products per source
and per second (throughput), and the trend: the change of the average price
against the previous window. Prices of open windows are kept to compute the
percentiles, so memory is bounded by the window length, not the stream.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

import msgspec


class PriceStats(msgspec.Struct, frozen=True):
    count: int
    min: float
    avg: float
    max: float
    p50: float
    p95: float


class WindowStats(msgspec.Struct, frozen=True, omit_defaults=True):
    """A closed window: `NODE.windows` items."""

    start: float
    end: float
    count: int
    price: PriceStats | None
    by_category: dict[str, PriceStats]
    category_distribution: dict[str, int]
    per_source: dict[str, int]
    throughput: dict[str, float] = {}  # products per second per source (time windows)
    trend: float | None = None  # avg price change vs the previous closed window, in percent
    node: str = ""  # the node whose window stage closed it


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def price_stats(prices: list[float]) -> PriceStats | None:
    if not prices:
        return None
    ordered = sorted(prices)
    return PriceStats(
        len(ordered),
        ordered[0],
        round(sum(ordered) / len(ordered), 2),
        ordered[-1],
        percentile(ordered, 50),
        percentile(ordered, 95),
    )


class _Open:
    __slots__ = ("by_category", "prices", "sources")

    def __init__(self) -> None:
        self.prices: list[float] = []
        self.by_category: defaultdict[str, list[float]] = defaultdict(list)
        self.sources: Counter[str] = Counter()


class Windows:
    def __init__(
        self, length: float, slide: float | None = None, *, by: str = "time", start: float = 0.0
    ) -> None:
        if length <= 0 or (slide is not None and not 0 < slide <= length):
            raise ValueError("a window needs length > 0 and 0 < slide <= length")
        self.length, self.slide, self.by, self.start = length, slide or length, by, start
        self._open: dict[int, _Open] = {}  # window number -> contents
        self._previous_avg: float | None = None
        self._next_to_close = 0

    def _numbers(self, key: float) -> range:
        """Window numbers k with start + k*slide <= key < start + k*slide + length."""
        offset = key - self.start
        last = math.floor(offset / self.slide)
        first = math.floor((offset - self.length) / self.slide) + 1
        return range(max(0, first), last + 1)

    def add(self, key: float, product: Any) -> list[WindowStats]:
        closed = self.advance(key)
        for number in self._numbers(key):
            if number < self._next_to_close:
                continue  # a late arrival for a window already closed
            window = self._open.setdefault(number, _Open())
            window.prices.append(product.price)
            window.by_category[product.category].append(product.price)
            window.sources[product.source] += 1
        return closed

    def advance(self, key: float) -> list[WindowStats]:
        """Close every window that ends at or before `key`."""
        closed = []
        while self.start + self._next_to_close * self.slide + self.length <= key:
            closed.append(self._close(self._next_to_close))
        return closed

    def flush(self) -> list[WindowStats]:
        """Close the windows still open (the stream ended)."""
        closed = []
        last = max(self._open, default=self._next_to_close - 1)
        while self._next_to_close <= last:
            closed.append(self._close(self._next_to_close))
        return closed

    def _close(self, number: int) -> WindowStats:
        window = self._open.pop(number, None) or _Open()
        self._next_to_close = number + 1
        start = self.start + number * self.slide
        overall = price_stats(window.prices)
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
        return WindowStats(
            start=start,
            end=start + self.length,
            count=len(window.prices),
            price=overall,
            by_category={c: s for c, p in sorted(window.by_category.items()) if (s := price_stats(p))},
            category_distribution=dict(
                Counter({c: len(p) for c, p in window.by_category.items()}).most_common()
            ),
            per_source=dict(sorted(window.sources.items())),
            throughput=throughput,
            trend=trend,
        )
