"""`csv`: products as a CSV file, streamed, written atomically.

One row per product, columns in the order of the Product record (or those
named in `columns`); `extra` is one JSON-encoded column. The file is
written under a temporary name and renamed when the input ends, so a reader
never sees half a file; an interrupted run still drains into it.
"""

from __future__ import annotations

import csv as csvlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from flow.registry import Params, stage

from ._files import written_whole
from .items import Product, ProductBatch

COLUMNS = list(Product.__struct_fields__)


class CsvParams(Params):
    path: str = "products.csv"  # relative paths are under run.out
    columns: list[str] = msgspec.field(default_factory=lambda: list(COLUMNS))  # Product fields, in order
    delimiter: str = ","

    def __post_init__(self) -> None:
        unknown = [c for c in self.columns if c not in COLUMNS]
        if unknown:
            fields = ", ".join(COLUMNS)
            raise ValueError(f"columns: not Product fields: {', '.join(unknown)}; fields: {fields}")
        if len(self.delimiter) != 1:
            raise ValueError("delimiter: one character, e.g. ',' or ';'")


@stage("csv", CsvParams, consumes=ProductBatch, produces=None, whole=True)
async def csv(source: AsyncIterator[ProductBatch], params: CsvParams, ctx: Any) -> AsyncIterator[Any]:
    """Write every product as a CSV row (header first), atomically."""
    with written_whole(ctx, params.path) as tmp, tmp.open("w", encoding="utf-8", newline="") as out:
        rows = csvlib.writer(out, delimiter=params.delimiter)
        rows.writerow(params.columns)
        encode = msgspec.json.encode
        for_row = [(c, c == "extra") for c in params.columns]
        async for batch in source:
            rows.writerows(
                [encode(getattr(p, c)).decode() if js else getattr(p, c) for c, js in for_row]
                for p in batch.products
            )
            yield batch


KIND = csv
