"""`stamp`: a stage kind from outside flow, registered by entry point."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from flow import Params, stage


class StampParams(Params):
    field: str = "stamp"  # the key added to every record
    value: str = "seen"


@stage("stamp", StampParams, consumes=list, produces=list)
async def stamp(source: AsyncIterator[list[Any]], params: StampParams, ctx: Any) -> AsyncIterator[list[Any]]:
    """Add `field: value` to every record of a batch and count the records."""
    async for batch in source:
        ctx.count("stamped", len(batch))
        yield [{**record, params.field: params.value} for record in batch]


KIND = stamp
