"""Per-item stages: `run(item, params, ctx)` mapped over a stream with a
bounded number in flight (aiostream's `map` with a task limit), a span and a
duration measurement per item."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from .items import abandon


async def mapped(
    source: AsyncIterator[Any], run: Any, params: Any, ctx: Any, spans: Any = None, latency: Any = None
) -> AsyncIterator[Any]:
    """A per-item stage: `run(item, params, ctx)` over the input, at most
    `params.concurrency` at once (aiostream's map with a task limit). With
    `spans` (a flow.tracing.StageSpans: tracing is on) each item runs in its
    own span, placed under its batch's root span; with `latency` (a
    flow.metrics.HistogramSeries: metrics are on) each item's time is
    recorded."""
    from aiostream import stream

    loop = asyncio.get_running_loop()

    async def call(item: Any) -> Any:  # aiostream wants a coroutine function here
        started = loop.time()
        try:
            if spans is None:
                return await run(item, params, ctx)
            with spans.current(item):
                return await run(item, params, ctx)
        except BaseException:  # failed, or cancelled because its branch ended
            abandon(item, "dropped: the stage did not finish it")
            raise
        finally:
            if latency is not None:
                latency.record(loop.time() - started)

    # A per-item stage may return None to pass nothing on (e.g. a failed page
    # it has recorded as an error).
    if params.concurrency == 1:  # no tasks needed: await each in turn
        async for item in source:
            result = await call(item)
            if result is not None:
                yield result
        return
    mapped = stream.map(source, call, task_limit=params.concurrency, ordered=params.ordered)
    async with mapped.stream() as results:
        async for result in results:
            if result is not None:
                yield result
