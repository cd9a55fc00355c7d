"""`collect`: a sink that writes what reaches it as JSON lines, or drops it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from flow.registry import ANY, Params, stage


class CollectParams(Params):
    path: str | None = None  # JSON lines file; relative paths are under run.out


@stage("collect", CollectParams, consumes=ANY, produces=None)
async def collect(source: AsyncIterator[Any], params: CollectParams, ctx: Any) -> AsyncIterator[Any]:
    """Write every item (a batch is one item per element) as one JSON line to
    `path`, or only count the items when no path is given."""
    import msgspec

    encode = msgspec.json.Encoder().encode
    out = ctx.open_output(params.path) if params.path else None
    try:
        async for item in source:
            if out is not None:
                for element in item if isinstance(item, list) else [item]:
                    out.write(encode(element) + b"\n")
            yield item
    finally:
        if out is not None:
            out.close()


KIND = collect
