"""Buffer: bounded, blocking when full, ending when every producer is done."""

from __future__ import annotations

import asyncio

import pytest

from flow.buffer import Buffer


async def test_put_blocks_when_full_and_statistics_show_it():
    buffer = Buffer(2, name="b")
    await buffer.put(1)
    await buffer.put(2)
    blocked = asyncio.create_task(buffer.put(3))
    await asyncio.sleep(0)
    stats = buffer.statistics()
    assert (stats.fill, stats.capacity, stats.producers_waiting) == (2, 2, 1)
    assert not blocked.done()
    items = aiter(buffer)
    assert await anext(items) == 1
    await blocked
    assert buffer.statistics().fill == 2
    buffer.done()
    assert [x async for x in items] == [2, 3]
    assert buffer.statistics().taken == 3


async def test_ends_only_when_every_producer_is_done():
    buffer = Buffer(4, producers=2)
    await buffer.put("a")
    buffer.done()
    reader = asyncio.create_task(_collect(buffer))
    await asyncio.sleep(0)
    assert not reader.done() and buffer.statistics().consumers_waiting == 1
    await buffer.put("b")
    buffer.done()
    assert await reader == ["a", "b"]


async def test_iteration_resumes_after_an_early_stop():
    buffer = Buffer(4)
    for x in range(3):
        await buffer.put(x)
    buffer.done()
    async for x in buffer:
        assert x == 0
        break
    assert [x async for x in buffer] == [1, 2]
    assert [x async for x in buffer] == []


def test_bad_arguments_and_too_many_done():
    with pytest.raises(ValueError):
        Buffer(0)
    buffer = Buffer(1)
    buffer.done()
    with pytest.raises(RuntimeError):
        buffer.done()


async def _collect(buffer: Buffer) -> list[object]:
    return [x async for x in buffer]
