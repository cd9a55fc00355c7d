"""`jsonl`: products as JSON lines, streamed, written atomically.

One line per product, as the Product record encodes (fields left at their
default, such as an empty `extra`, are left out, as in summary.json). The
file is written under a temporary name and renamed when the input ends, so
a reader never sees half a file; an interrupted run still drains into it.
For anything else as JSON lines (dead letters, errors, windows), `collect`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

from flow.registry import Params, stage

from ._files import written_whole
from .items import ProductBatch


class JsonlParams(Params):
    path: str = "products.jsonl"  # relative paths are under run.out


@stage("jsonl", JsonlParams, consumes=ProductBatch, produces=None, whole=True)
async def jsonl(source: AsyncIterator[ProductBatch], params: JsonlParams, ctx: Any) -> AsyncIterator[Any]:
    """Write every product as one JSON line, atomically."""
    encode = msgspec.json.Encoder().encode_into
    buffer = bytearray()
    with written_whole(ctx, params.path) as tmp, tmp.open("wb") as out:
        async for batch in source:
            buffer.clear()
            for product in batch.products:
                encode(product, buffer, -1)
                buffer += b"\n"
            out.write(buffer)
            yield batch


KIND = jsonl
