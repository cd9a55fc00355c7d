"""Per-item stages: `run(item, params, ctx)` mapped over a stream with a
bounded number in flight (`concurrently`), a span and a duration
measurement per item.

Isolation per item: an exception on one item becomes an error record for
that item (on `NODE.errors`, with its endpoint and page when it has them)
and the stage goes on with the next; only `MAX_FAILURES_IN_A_ROW` failures
in a row end the branch (a stage that fails on everything is broken, not
unlucky)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from .items import abandon
from .tracing import provenance

MAX_FAILURES_IN_A_ROW = 10


async def mapped(
    source: AsyncIterator[Any], run: Any, params: Any, ctx: Any, spans: Any = None, latency: Any = None
) -> AsyncIterator[Any]:
    """A per-item stage: `run(item, params, ctx)` over the input, at most
    `params.in_flight` at once (`concurrently`). With
    `spans` (a flow.tracing.StageSpans: tracing is on) each item runs in its
    own span, placed under its batch's root span; with `latency` (a
    flow.metrics.HistogramSeries: metrics are on) each item's time is
    recorded."""
    loop = asyncio.get_running_loop()
    failures = 0  # in a row; one event loop, no lock

    async def call(item: Any) -> Any:
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
        finally:
            if latency is not None:
                latency.record(loop.time() - started)

    # A per-item stage may return None to pass nothing on (e.g. a failed page
    # it has recorded as an error).
    limit = params.in_flight
    if limit == 1:  # no tasks needed: await each in turn
        async for item in source:
            try:
                result = await call(item)
            except BaseException:  # cancelled because its branch ended
                abandon(item, "dropped: the stage did not finish it")
                raise
            if result is not None:
                yield result
        return
    # Closed explicitly: closing this generator closes the calls at once, as
    # the runtime's downstream-first close of a chain expects.
    async with contextlib.aclosing(concurrently(source, call, limit, params.ordered)) as results:
        async for result in results:
            if result is not None:
                yield result


_END = object()


async def concurrently(
    source: AsyncIterator[Any], call: Any, limit: int, ordered: bool
) -> AsyncIterator[Any]:
    """`call(item)` over `source` with `limit` calls running at all times
    while there is input, results in input order or as they finish.

    aiostream's `map(task_limit=N)` starts the next call only while its
    consumer asks for a result, so a consumer busy for a moment with each
    result keeps fewer than N running (5.7 of 8 in a test with a 5 ms
    consumer and 100 ms calls: 7 s instead of 5 s). Here a feeder task takes
    input whenever a call slot is free, and at most 2 x `limit` items are
    held (running, or finished and waiting for the consumer), so memory stays
    bounded however slow the consumer. Closing the generator cancels the
    feeder and every call; every item taken from the input and not passed
    on (not started, running, or finished and waiting) is abandoned
    (flow.items.abandon), and every call's exception is retrieved."""
    loop = asyncio.get_running_loop()
    out: deque[Any] = deque()  # calls in the order to pass them on, then _END
    pending: dict[asyncio.Task[Any], Any] = {}  # call -> its item, until passed on: at most 2 x limit
    calls: set[asyncio.Task[Any]] = set()  # running: at most limit
    taken, room = _Signal(loop), _Signal(loop)  # for the consumer: `out` grew; for the feeder: room
    fed = False

    def put(entry: Any) -> None:
        out.append(entry)
        taken.wake()

    def finished(task: asyncio.Task[Any]) -> None:
        calls.discard(task)
        room.wake()
        if not ordered:
            put(task)
            if fed and not calls:
                put(_END)

    async def feed() -> None:
        nonlocal fed
        try:
            async for item in source:
                try:
                    while len(calls) >= limit or len(pending) >= 2 * limit:
                        await room.wait()
                except BaseException:
                    abandon(item, "dropped: the stage did not start it")
                    raise
                task = loop.create_task(call(item))
                pending[task] = item
                calls.add(task)
                task.add_done_callback(finished)
                if ordered:
                    put(task)
        finally:
            fed = True
            if ordered or not calls:
                put(_END)

    feeder = loop.create_task(feed())
    try:
        while True:
            while not out:
                await taken.wait()
            task = out.popleft()
            if task is _END:
                break
            item = pending.pop(task)
            room.wake()
            try:
                result = await task
            except Exception:
                raise  # the call failed (MAX_FAILURES_IN_A_ROW) and abandoned its item itself
            except BaseException:
                pending[task] = item  # cancelled while waiting for it: abandoned below
                raise
            yield result
        await feeder  # the source's own error, if it ended on one
    finally:
        feeder.cancel()
        for task in pending:
            task.cancel()
        await asyncio.gather(feeder, *pending, return_exceptions=True)
        for item in pending.values():
            abandon(item, "dropped: the stage did not pass it on")


class _Signal:
    """One waiting side of `concurrently`: `wait()` returns after the next
    `wake()`. Lighter than asyncio's Semaphore and Queue (no waiter scans,
    no loop lookup per wait); one event loop, so no lock: a woken side
    checks its condition again."""

    __slots__ = ("_loop", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._waiter = loop, None

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        self._waiter = waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None


async def _failed_item(ctx: Any, item: Any, exc: Exception) -> None:
    ctx.run.raised += 1
    key = provenance(item)
    where = {} if key is None else {"endpoint": key[0], "page": key[1]}
    await ctx.error(type(exc).__name__, f"{exc or repr(exc)} (the stage went on with the next item)", **where)
