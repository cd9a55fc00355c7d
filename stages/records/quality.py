"""`quality`: a data-quality score per product, from documented deductions.

The score starts at 1.0 and loses, for each defect found (never below 0):

    category missing (normalised to "uncategorized")   0.25
    price of zero                                       0.25
    title shorter than `min_title` characters           0.15
    title all in capitals                               0.10
    currency not one of `currencies`                    0.10

The score is stored in the product's `quality` field; `min_score` drops
products below it (each drop counted), so a graph can keep only good data.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec

from flow import ledger
from flow.registry import Params, stage

from .items import ProductBatch
from .product import DEFAULT_CATEGORY, Product


class QualityParams(Params):
    min_title: Annotated[int, msgspec.Meta(ge=0)] = 5
    currencies: list[str] = msgspec.field(default_factory=lambda: ["USD", "EUR", "GBP", "JPY"])
    min_score: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.0


def score(product: Product, params: QualityParams) -> float:
    deductions = 0.0
    if product.category == DEFAULT_CATEGORY:
        deductions += 0.25
    if product.price == 0:
        deductions += 0.25
    if len(product.title) < params.min_title:
        deductions += 0.15
    letters = [c for c in product.title if c.isalpha()]
    if letters and all(c.isupper() for c in letters):
        deductions += 0.10
    if product.currency not in params.currencies:
        deductions += 0.10
    return round(max(0.0, 1.0 - deductions), 2)


@stage("quality", QualityParams, consumes=ProductBatch, produces=ProductBatch, spans=False)
async def quality(source: AsyncIterator[Any], params: QualityParams, ctx: Any) -> AsyncIterator[Any]:
    """Score each product (documented deductions); optionally drop low scores."""
    async for batch in source:
        kept = []
        for product in batch.products:
            scored = msgspec.structs.replace(product, quality=score(product, params))
            if scored.quality < params.min_score:
                ctx.count(ledger.FILTERED, on=product.source)
                continue
            kept.append(scored)
        yield msgspec.structs.replace(batch, products=kept)


KIND = quality
