"""Per-item stages: `run(item, params, ctx)` mapped over a stream with a
bounded number in flight (aiostream's `map` with a task limit), a span and a
duration measurement per item.

Isolation per item: an exception on one item becomes an error record for
that item (on `NODE.errors`, with its endpoint and page when it has them)
and the stage goes on with the next; only `MAX_FAILURES_IN_A_ROW` failures
in a row end the branch (a stage that fails on everything is broken, not
unlucky)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from .items import abandon
from .tracing import provenance

MAX_FAILURES_IN_A_ROW = 10


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
    failures = 0  # in a row; one event loop, no lock

    async def call(item: Any) -> Any:  # aiostream wants a coroutine function here
        nonlocal failures
        started = loop.time()
        try:
            if spans is None:
                result = await run(item, params, ctx)
            else:
                with spans.current(item):
                    result = await run(item, params, ctx)
            failures = 0
            return result
        except Exception as exc:
            abandon(item, "dropped: the stage failed on it")
            failures += 1
            if failures >= MAX_FAILURES_IN_A_ROW:
                raise  # the engine records it and ends the branch
            await _failed_item(ctx, item, exc)
            return None
        except BaseException:  # cancelled because its branch ended
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


async def _failed_item(ctx: Any, item: Any, exc: Exception) -> None:
    ctx.run.raised += 1
    key = provenance(item)
    where = {} if key is None else {"endpoint": key[0], "page": key[1]}
    await ctx.error(type(exc).__name__, f"{exc or repr(exc)} (the stage went on with the next item)", **where)
