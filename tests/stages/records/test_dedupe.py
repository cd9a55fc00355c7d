"""dedupe keeps the best copy within its hold window, the first beyond it,
and counts every drop."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from flow.context import RunState, StageContext
from stages.records.dedupe import DedupeParams, dedupe
from stages.records.normalize import ProductBatch
from stages.records.product import Product


def p(sid: int, quality: float = 1.0) -> Product:
    return Product(
        id=f"s:{sid}",
        source_id=str(sid),
        title="t",
        source="s",
        price=1.0,
        currency="USD",
        category="c",
        processed_at="x",
        quality=quality,
    )


def run(batches: list[list[Product]], hold: int) -> tuple[list[Product], dict[str, int]]:
    resources = RunState()
    ctx = StageContext("n", "dedupe", 0, __import__("pathlib").Path("."), resources)

    async def source() -> Any:
        for i, products in enumerate(batches):
            yield ProductBatch("s", i, products)

    async def main() -> list[Product]:
        return [
            x
            for batch in [b async for b in dedupe.run(source(), DedupeParams(hold=hold), ctx)]
            for x in batch.products
        ]

    return asyncio.run(main()), dict(resources.counters["s"])  # duplicates count on their source


def test_best_copy_within_the_hold_first_beyond():
    #  batch 0: 1(q.5) 2      batch 1: 1(q.9) 3      batch 2: 2(q1.0) 1(q1.0)
    out, counts = run([[p(1, 0.5), p(2)], [p(1, 0.9), p(3)], [p(2, 1.0), p(1, 1.0)]], hold=10)
    assert [(x.source_id, x.quality) for x in out] == [("1", 1.0), ("2", 1.0), ("3", 1.0)]  # first-seen order
    assert counts["duplicates"] == 3
    out, counts = run([[p(1, 0.5), p(2)], [p(1, 0.9), p(3)]], hold=0)  # no hold: the first wins
    assert [(x.source_id, x.quality) for x in out] == [("1", 0.5), ("2", 1.0), ("3", 1.0)]
    assert counts["duplicates"] == 1


@given(
    ids=st.lists(st.integers(0, 30), max_size=120),
    hold=st.integers(0, 50),
    qualities=st.lists(st.floats(0, 1), min_size=120, max_size=120),
)
def test_one_record_per_key_and_every_drop_counted(ids, hold, qualities):
    products = [p(i, round(q, 2)) for i, q in zip(ids, qualities, strict=False)]
    batches = [products[k : k + 7] for k in range(0, len(products), 7)]
    out, counts = run(batches, hold)
    assert sorted(x.source_id for x in out) == sorted({str(i) for i in ids})
    assert counts.get("duplicates", 0) == len(ids) - len(set(ids))
