"""`collect`: a sink that writes what reaches it as JSON lines, or drops it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from flow.registry import ANY, Params, stage


class CollectParams(Params):
    path: str | None = None  # JSON lines file; relative paths are under run.out


@stage("collect", CollectParams, consumes=ANY, produces=None, fan_in=True)
async def collect(source: AsyncIterator[Any], params: CollectParams, ctx: Any) -> AsyncIterator[Any]:
    """Write every item as JSON lines to `path` (one line per record of a batch:
    a list, a batch of products or of parsed records; one per dead letter,
    error or window), or only count the items when no path is given."""
    import msgspec

    encode = msgspec.json.Encoder(enc_hook=_encode_other).encode
    out = ctx.open_output(params.path) if params.path else None
    try:
        async for item in source:
            if out is not None:
                for element in _elements(item):
                    out.write(encode(element) + b"\n")
            yield item
    finally:
        if out is not None:
            out.close()


def _encode_other(value: Any) -> Any:
    """Durations and rates as text; what is not data (a request's planner or
    limiter) as null."""
    encode = getattr(value, "__flow_encode__", None)
    return encode() if encode is not None else None


def _elements(item: Any) -> list[Any]:
    if isinstance(item, list):
        return item
    to_dict = getattr(item, "to_dict", None)  # an error record: flat, as in the reports
    if to_dict is not None:
        return [to_dict()]
    products = getattr(item, "products", None)
    if products is not None:
        return products
    raws = getattr(item, "raws", None)  # records as served: their JSON text, made compact
    if raws is not None:  # (one line each, whatever the server's indentation)
        import msgspec  # loaded by the stage by now

        return [msgspec.Raw(msgspec.json.format(bytes(raw), indent=-1)) for _, raw in raws]
    return [item]


KIND = collect
