"""`rate_limit`: the request budget of the node's `fetch`, shared by name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from flow.registry import Params, stage
from mocks._spec import parse_duration, parse_rate


class RateLimitParams(Params):
    rate: str = "5/s"  # at most this many requests in any sliding window, retries included
    name: str | None = None  # nodes naming the same limiter share one budget (default: the node)
    margin: str | float = "50ms"  # spacing beyond the window, for network jitter

    def __post_init__(self) -> None:
        for field, parse, value in (("rate", parse_rate, self.rate), ("margin", parse_duration, self.margin)):
            try:
                parsed = parse(value)  # type: ignore[operator]
            except ValueError as err:
                raise ValueError(f"{field}: {err}") from None
            if field == "rate" and parsed is None:
                raise ValueError("rate: 'off' is not a limit; remove the rate_limit stage instead")


@stage("rate_limit", RateLimitParams, consumes="requests", produces="requests", spans=False)
async def rate_limit(source: AsyncIterator[Any], params: RateLimitParams, ctx: Any) -> AsyncIterator[Any]:
    """Give this node's fetch a sliding-window limiter (first tries, retries and
    breaker probes all count) and pass the requests on."""
    count, window = parse_rate(params.rate)  # type: ignore[misc]
    name = params.name or ctx.node
    ctx.shared["limiter"] = ctx.resources.limiters.get(
        name, count, window, margin=parse_duration(params.margin)
    )
    async for request in source:
        yield request


KIND = rate_limit
