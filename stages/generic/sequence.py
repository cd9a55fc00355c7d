"""`sequence`: a source of numbered test records, for trying a graph out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec

from flow.registry import Params, stage


class SequenceParams(Params):
    items: Annotated[int, msgspec.Meta(ge=0)] = 100
    batch: Annotated[int, msgspec.Meta(ge=1)] = 20


@stage("sequence", SequenceParams, consumes=None, produces=list)
async def sequence(source: None, params: SequenceParams, ctx: Any) -> AsyncIterator[list[dict[str, Any]]]:
    """Emit `items` records `{"source": NODE, "n": N}` in batches of `batch`."""
    node = getattr(ctx, "node", "sequence")
    for start in range(0, params.items, params.batch):
        yield [{"source": node, "n": n} for n in range(start, min(start + params.batch, params.items))]


KIND = sequence
