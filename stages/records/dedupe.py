"""`dedupe`: one record per key, keeping the best copy seen within a window.

Records wait in an insertion-ordered buffer of at most `hold` records before
they are passed on. A copy whose key is still in the buffer replaces the
waiting record if its `quality` is strictly higher (else it is dropped); a
copy whose key was already passed on is dropped. Every drop is counted, per
source too. So: best-of-copies for copies at most `hold` records apart (the
mocks put copies within three pages), first-come beyond. `hold: 0` passes
each first copy on at once.

Memory: `hold` records plus the keys seen, kept as 76-bit digests in a
`DigestSet` (.keyset): about 12 bytes a key of RSS, 12 MB for a million,
instead of ~100 bytes a key for a set of the keys themselves. Two different keys are
taken for one with a chance of at most n**2 / 2**77 over a run of n keys
(7e-12 at a million); see .keyset.
"""

from __future__ import annotations

import difflib
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec

from flow import ledger
from flow.registry import Params, stage

from .items import Product, ProductBatch
from .keyset import DigestSet


class DedupeParams(Params):
    key: str = "id"  # a Product field
    hold: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 200  # records kept back to find better copies

    def __post_init__(self) -> None:
        fields = Product.__struct_fields__
        if self.key not in fields:
            close = difflib.get_close_matches(self.key, fields, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"fields: {', '.join(fields)}"
            raise ValueError(f"key: '{self.key}' is not a field of the product record; {hint}")


@stage("dedupe", DedupeParams, consumes=ProductBatch, produces=ProductBatch, spans=False)
async def dedupe(source: AsyncIterator[Any], params: DedupeParams, ctx: Any) -> AsyncIterator[Any]:
    """One record per key: the best copy within `hold` records, else the first."""
    seen = DigestSet()  # digests of the keys passed on or waiting
    waiting: OrderedDict[Any, Any] = OrderedDict()  # key -> best copy so far, oldest first
    key, hold, first_seen = params.key, params.hold, seen.add

    def drop(product: Any) -> None:
        ctx.count(ledger.DUPLICATES, on=product.source)  # on the ledger of the source it came from

    last = None
    async for batch in source:
        last = batch
        out = []
        for product in batch.products:
            value = getattr(product, key)
            kept = waiting.get(value)
            if kept is not None:  # a copy of a waiting record: keep the better one
                if product.quality > kept.quality:
                    waiting[value] = product
                    drop(kept)
                else:
                    drop(product)
            elif first_seen(value):
                waiting[value] = product
                while len(waiting) > hold:
                    out.append(waiting.popitem(last=False)[1])
            else:  # passed on already
                drop(product)
        if out:
            yield msgspec.structs.replace(batch, products=out)
    if waiting and last is not None:
        yield msgspec.structs.replace(last, products=list(waiting.values()))


KIND = dedupe
