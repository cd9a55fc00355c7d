"""Event-time windows per key (the `window` stage run by the engine), against
an oracle written from the rule, not from the code:

    the watermark is the latest event time seen less `lateness`, moved after
    each batch; a product counts in every window covering its time that ends
    after the watermark at its arrival, in its key's series; it is late when
    there is none, untimed when it has no time; late and untimed products
    are counted and go out on NODE.late, and every product passes on.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from flow.testing import run_graph
from stages.records.items import ProductBatch
from stages.records.product import Product

DAY = 86_400
START = 1_704_067_200  # 2024-01-01T00:00:00Z


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _product(n: int, day: float | None, key: str, price: float, base: float = START) -> Product:
    return Product(id=f"s:{n}", source_id=str(n), title="t", source="s", price=price, currency="USD",
                   category=key, processed_at="2026-01-01T00:00:00.000Z",
                   timestamp=None if day is None else _iso(base + day * DAY))  # fmt: skip


def _oracle(batches: list[list[Product]], length: float, slide: float, lateness: float) -> tuple[dict, int, int]:
    """(window (key, start ISO) -> (count, sum of prices), late, untimed) by the rule."""
    windows: dict[tuple[str, str], tuple[int, float]] = {}
    late = untimed = 0
    watermark, latest = -math.inf, -math.inf
    for batch in batches:
        for p in batch:
            if p.timestamp is None:
                untimed += 1
                continue
            at = datetime.fromisoformat(p.timestamp).timestamp()
            latest = max(latest, at)
            # Every window start k * slide (from the epoch, k any integer) whose window
            # holds `at`: found by trying every k near it, not by solving for k.
            near = int(at // slide)
            starts = [k * slide for k in range(near - int(length // slide) - 2, near + 2)]
            open_ = [start for start in starts if start <= at < start + length and start + length > watermark]
            if not open_:
                late += 1
            for start in open_:
                count, total = windows.get((p.category, _iso(start)), (0, 0.0))
                windows[(p.category, _iso(start))] = (count + 1, total + p.price)
        watermark = latest - lateness
    return windows, late, untimed


days = st.one_of(st.none(), st.floats(0, 120, allow_nan=False).map(lambda d: round(d, 3)))
products = st.lists(st.tuples(days, st.sampled_from(["a", "b", "c"]), st.floats(1, 500)), min_size=1, max_size=60)
# 2024, and a stretch around the Unix epoch (windows that start before 1970)
EPOCHS = st.sampled_from([START, -60 * DAY])


@settings(max_examples=60, deadline=None)
@given(items=products, cuts=st.lists(st.integers(1, 8), min_size=1, max_size=20), base=EPOCHS,
       length=st.sampled_from([7, 10, 28]), share=st.sampled_from([1.0, 0.5, 0.3]),
       lateness=st.sampled_from([0, 3, 30]))  # fmt: skip
def test_each_product_counts_in_exactly_the_open_windows_covering_its_time(items, cuts, base, length, share, lateness):
    made = [_product(n, day, key, round(price, 2), base) for n, (day, key, price) in enumerate(items)]
    batches, i = [], 0
    for size in cuts * (len(made) // len(cuts) + 1):
        if i >= len(made):
            break
        batches.append(made[i : i + size])
        i += size
    slide = length * share
    sinks: dict[str, list[Any]] = {}
    window = f"{{window: {{time: timestamp, every: {length}d, slide: {slide}d, by: category, lateness: {lateness}d}}}}"
    result = run_graph(
        "version: 1\nnodes:\n"
        f"  w: {{pipe: [{{testing_source: {{name: in}}}}, {window}]}}\n"
        "  out: {from: w, pipe: [testing_sink]}\n"
        "  windows: {from: w.windows, pipe: [testing_sink]}\n"
        "  late: {from: w.late, pipe: [testing_sink]}\n",
        sources={"in": [ProductBatch("s", k, b) for k, b in enumerate(batches)]},
        sinks=sinks,
    )
    assert result.status == "completed" and not result.errors
    expected, late, untimed = _oracle(batches, length * DAY, slide * DAY, lateness * DAY)
    windows = sinks.get("windows", [])
    got = {(w.key, w.start): (w.count, w.price.avg) for w in windows if w.count}
    assert got == {key: (count, round(total / count, 2)) for key, (count, total) in expected.items()}
    assert len({(w.key, w.start) for w in windows}) == len(windows)  # each window closed once
    assert all(w.name == "w#1" and w.time == "timestamp" for w in windows)
    for w in windows:  # the figures of what it counted
        assert w.end == _iso(datetime.fromisoformat(w.start).timestamp() + length * DAY)
        assert w.category_distribution == ({w.key: w.count} if w.count else {})
    counters = result.counters.get("w", {})
    assert (counters.get("late", 0), counters.get("untimed", 0)) == (late, untimed)
    left_out = Counter(b.reason for b in sinks.get("late", []) for p in b.products)
    assert left_out == Counter({"late": late, "untimed": untimed}) - Counter()
    assert [p.id for b in sinks["out"] for p in b.products] == [p.id for p in made]  # every product passes on


def test_a_trend_is_against_the_same_key_s_previous_window():
    made = [_product(0, 1, "a", 10), _product(1, 1, "b", 100), _product(2, 8, "a", 15), _product(3, 8, "b", 50)]
    sinks: dict[str, list[Any]] = {}
    run_graph(
        "version: 1\nnodes:\n"
        "  w: {pipe: [{testing_source: {name: in}}, {window: {time: timestamp, every: 7d, by: category, name: weekly}}]}\n"
        "  windows: {from: w.windows, pipe: [testing_sink]}\n",
        sources={"in": [ProductBatch("s", 0, made)]},
        sinks=sinks,
    )
    trends = {(w.key, w.start[:10]): (w.price.avg, w.trend) for w in sinks["windows"]}
    # 7-day windows from the epoch start on Thursdays: 2023-12-28 and 2024-01-04.
    assert trends == {
        ("a", "2023-12-28"): (10.0, None), ("b", "2023-12-28"): (100.0, None),
        ("a", "2024-01-04"): (15.0, 50.0), ("b", "2024-01-04"): (50.0, -50.0),
    }  # fmt: skip
    assert {w.name for w in sinks["windows"]} == {"weekly"}
