"""Windows under explicit keys (virtual time): assignment, closing, stats, trends."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stages.records.product import Product
from stages.records.windows import Windows, percentile


def product(price: float, category: str = "c", source: str = "s") -> Product:
    return Product(id=f"{source}:{price}", source_id=str(price), title="t", source=source, price=price,
                   currency="USD", category=category, processed_at="2026-01-01T00:00:00Z")  # fmt: skip


def test_tumbling_by_time():
    #  t:   0.1  0.5  0.9 | 1.2  1.8 | 2.5      (length 1)
    #       [0, 1)        | [1, 2)   | [2, 3) closed by flush
    w = Windows(1.0, start=0.0)
    assert w.add(0.1, product(10)) == [] and w.add(0.5, product(20)) == [] and w.add(0.9, product(30)) == []
    closed = w.add(1.2, product(40))
    assert [(c.start, c.end, c.count) for c in closed] == [(0.0, 1.0, 3)]
    assert closed[0].price.avg == 20 and closed[0].price.p50 == 20 and closed[0].price.max == 30
    w.add(1.8, product(60))
    closed = w.add(2.5, product(5))
    assert [(c.start, c.count, c.price.avg, c.trend) for c in closed] == [(1.0, 2, 50.0, 150.0)]
    assert [(c.start, c.count) for c in w.flush()] == [(2.0, 1)]


def test_sliding_windows_overlap():
    #  length 4, slide 2:  [0,4) [2,6) [4,8)
    #  key 3 -> [0,4) and [2,6); key 5 -> [2,6) and [4,8)
    w = Windows(4.0, 2.0, by="count")
    w.add(3, product(1))
    closed = w.add(5, product(2))
    assert [(c.start, c.count) for c in closed] == [(0.0, 1)]
    assert [(c.start, c.count) for c in w.flush()] == [(2.0, 2), (4.0, 1)]


def test_empty_windows_in_a_gap_are_reported_empty():
    w = Windows(1.0)
    w.add(0.5, product(1))
    closed = w.add(3.5, product(2))
    assert [(c.start, c.count, c.price is None) for c in closed] == [
        (0.0, 1, False),
        (1.0, 0, True),
        (2.0, 0, True),
    ]


def test_per_category_and_source_throughput():
    w = Windows(2.0)
    for price, category, source in [(10, "a", "x"), (30, "a", "y"), (5, "b", "x")]:
        w.add(0.5, product(price, category, source))
    [stats] = w.flush()
    assert stats.category_distribution == {"a": 2, "b": 1}
    assert stats.by_category["a"].avg == 20 and stats.by_category["b"].count == 1
    assert stats.per_source == {"x": 2, "y": 1} and stats.throughput == {"x": 1.0, "y": 0.5}


@given(keys=st.lists(st.floats(0, 50), min_size=1, max_size=80), length=st.sampled_from([1.0, 2.5, 5.0]),
       slide_share=st.sampled_from([1.0, 0.5, 0.2]))  # fmt: skip
def test_every_product_is_counted_once_per_covering_window(keys, length, slide_share):
    slide = length * slide_share
    w = Windows(length, slide)
    closed = []
    for key in sorted(keys):
        closed += w.add(key, product(1.0))
    closed += w.flush()
    starts = [c.start for c in closed]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)  # each window closed once, in order
    for c in closed:
        expected = sum(1 for k in keys if c.start <= k < c.end)
        assert c.count == expected


def test_percentile_nearest_rank():
    assert (
        percentile([1, 2, 3, 4], 50) == 2 and percentile([1, 2, 3, 4], 95) == 4 and percentile([7], 95) == 7
    )
