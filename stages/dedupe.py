"""`dedupe`: drop records whose key was seen before, counting each drop.

Streaming: the first record of each key passes at once and only the keys are
held (not the records), so memory grows with distinct keys, not records.
Between duplicates the one kept is the first; a later copy with a strictly
higher `quality` cannot replace a record already passed on (the mocks'
duplicates are identical copies). Every drop is counted per source.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

from flow.registry import Params, stage


class DedupeParams(Params):
    key: str = "id"  # a Product field


@stage("dedupe", DedupeParams, consumes="products", produces="products")
async def dedupe(source: AsyncIterator[Any], params: DedupeParams, ctx: Any) -> AsyncIterator[Any]:
    """Pass on the first record of each key; count the duplicates dropped."""
    seen: set[Any] = set()
    key = params.key
    async for batch in source:
        kept = []
        for product in batch.products:
            value = getattr(product, key)
            if value in seen:
                ctx.count("duplicates")
                ctx.count(f"duplicates:{product.source}")
                continue
            seen.add(value)
            kept.append(product)
        yield msgspec.structs.replace(batch, products=kept)


KIND = dedupe
