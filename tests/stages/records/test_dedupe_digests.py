"""dedupe over digests gives exactly what it gave over a set of the keys: the
same batches, the same records in them, the same duplicates per source, also
while its DigestSet splits its buckets."""

from __future__ import annotations

import asyncio
import functools
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flow.context import RunState, StageContext
from stages.records import dedupe as dedupe_module
from stages.records.dedupe import DedupeParams, dedupe
from stages.records.items import Product, ProductBatch
from stages.records.keyset import DigestSet

SOURCES = ("shop_a", "shop_b")


def product(source: int, sid: int, quality: float) -> Product:
    name = SOURCES[source]
    return Product(
        id=f"{name}:{sid}",
        source_id=str(sid),
        title="t",
        source=name,
        price=float(sid % 7),
        currency="USD",
        category="c",
        processed_at="x",
        quality=quality,
    )


def with_a_set(batches: list[list[Product]], key: str, hold: int) -> tuple[list[list[str]], Counter[str]]:
    """The stage as it was, over a plain set of the keys passed on."""
    passed: set[Any] = set()
    waiting: OrderedDict[Any, Product] = OrderedDict()
    dropped: Counter[str] = Counter()
    out: list[list[str]] = []
    for batch in batches:
        passing = []
        for p in batch:
            value = getattr(p, key)
            if value in passed:
                dropped[p.source] += 1
            elif value in waiting:
                kept = waiting[value]
                better = p.quality > kept.quality
                dropped[(kept if better else p).source] += 1
                if better:
                    waiting[value] = p
            else:
                waiting[value] = p
                while len(waiting) > hold:
                    old_key, old = waiting.popitem(last=False)
                    passed.add(old_key)
                    passing.append(old)
        if passing:
            out.append([f"{x.id}/{x.quality}" for x in passing])
    if waiting and batches:
        out.append([f"{x.id}/{x.quality}" for x in waiting.values()])
    return out, dropped


def with_the_stage(batches: list[list[Product]], key: str, hold: int) -> tuple[list[list[str]], Counter[str]]:
    resources = RunState()
    ctx = StageContext("n", "dedupe", 0, Path("."), resources)

    async def source() -> Any:
        for i, products in enumerate(batches):
            yield ProductBatch("shop_a", i, products)

    async def main() -> list[list[str]]:
        stage = dedupe.run(source(), DedupeParams(key=key, hold=hold), ctx)
        return [[f"{x.id}/{x.quality}" for x in b.products] async for b in stage]

    out = asyncio.run(main())
    dropped = Counter(
        {s: resources.counters[s]["duplicates"] for s in SOURCES if resources.counters[s]["duplicates"]}
    )
    return out, dropped


records = st.lists(
    st.tuples(st.integers(0, 1), st.integers(0, 60), st.sampled_from([0.2, 0.5, 0.9, 1.0])), max_size=300
)


@settings(max_examples=60, deadline=None)
@given(records, st.integers(1, 9), st.integers(0, 12), st.sampled_from(["id", "source_id", "price"]))
def test_same_batches_and_duplicates_as_with_a_set(stream, size, hold, key):
    products = [product(s, sid, q) for s, sid, q in stream]
    batches = [products[k : k + size] for k in range(0, len(products), size)]
    with pytest.MonkeyPatch.context() as patch:
        # 2 buckets of 2 keys on average: a stream of 120 distinct keys splits them 5 times
        patch.setattr(dedupe_module, "DigestSet", functools.partial(DigestSet, bucket_bits=1, mean=2))
        assert with_the_stage(batches, key, hold) == with_a_set(batches, key, hold)


def test_a_key_passed_on_long_ago_is_still_a_duplicate():
    #  keys 0..999, then 0..999 again, better: with hold 10 the second copies of 0..989 come
    #  after their first was passed on (dropped); 990..999 still wait and are replaced
    first = [product(0, i, 0.5) for i in range(1000)]
    again = [product(1, i, 1.0) for i in range(1000)]
    batches = [(first + again)[k : k + 20] for k in range(0, 2000, 20)]
    out, dropped = with_the_stage(batches, "source_id", 10)
    expected = [f"shop_a:{i}/0.5" for i in range(990)] + [f"shop_b:{i}/1.0" for i in range(990, 1000)]
    assert [x for b in out for x in b] == expected
    assert dropped == Counter({"shop_b": 990, "shop_a": 10})
