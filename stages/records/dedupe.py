"""`dedupe`: one record per key, keeping the best copy seen within a window.

Records wait in an insertion-ordered buffer of at most `hold` records before
they are passed on. A copy whose key is still in the buffer replaces the
waiting record if its `quality` is strictly higher (else it is dropped); a
copy whose key was already passed on is dropped. Every drop is counted, per
source too. So: best-of-copies for copies at most `hold` records apart (the
mocks put copies within three pages), first-come beyond; memory is `hold`
records plus the set of keys seen (not the records). `hold: 0` passes each
first copy on at once.
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
    passed: set[Any] = set()  # keys already passed on
    waiting: OrderedDict[Any, Any] = OrderedDict()  # key -> best copy so far
    key = params.key

    def drop(product: Any) -> None:
        ctx.count(ledger.DUPLICATES, on=product.source)  # on the ledger of the source it came from

    last = None
    async for batch in source:
        last = batch
        out = []
        for product in batch.products:
            value = getattr(product, key)
            if value in passed:
                drop(product)
            elif value in waiting:
                kept = waiting[value]
                if product.quality > kept.quality:
                    waiting[value] = product
                    drop(kept)
                else:
                    drop(product)
            else:
                waiting[value] = product
                while len(waiting) > params.hold:
                    old_key, old = waiting.popitem(last=False)
                    passed.add(old_key)
                    out.append(old)
        if out:
            yield msgspec.structs.replace(batch, products=out)
    if waiting and last is not None:
        passed.update(waiting)
        yield msgspec.structs.replace(last, products=list(waiting.values()))


KIND = dedupe
