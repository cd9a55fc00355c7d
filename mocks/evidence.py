"""Reading a server's request log as evidence: rate compliance, attempts per page.

These work on the `requests` list of `/__stats` (or `MockServer.stats()`),
so tests and benchmarks judge a client by what the server saw.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def max_per_window(times: Sequence[float], window: float = 1.0) -> int:
    """The most arrivals any sliding window `(t - window, t]` holds."""
    ordered = sorted(times)
    best = 0
    for i, t in enumerate(ordered):
        first = bisect.bisect_right(ordered, t - window)
        best = max(best, i + 1 - first)
    return best


def windows_over_limit(times: Sequence[float], limit: int, window: float = 1.0) -> list[tuple[float, int]]:
    """Every arrival that made its window exceed `limit`: (t, count in window)."""
    ordered = sorted(times)
    over = []
    for i, t in enumerate(ordered):
        count = i + 1 - bisect.bisect_right(ordered, t - window)
        if count > limit:
            over.append((t, count))
    return over


def attempts_per_page(requests: Iterable[Mapping[str, Any]], *params: str) -> Counter[tuple[str, ...]]:
    """How many requests asked for each page, a page named by the given query params."""
    return Counter(tuple(r["query"].get(p, "") for p in params) for r in requests)
