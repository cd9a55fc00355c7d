"""Buffer: bounded, blocking when full, ending when every producer is done."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


ops = st.lists(
    st.one_of(
        st.tuples(st.just("put")),
        st.tuples(st.just("cancel"), st.integers(min_value=0, max_value=20)),
        st.tuples(st.just("take")),
        st.tuples(st.just("yield")),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=3), ops)
def test_any_interleaving_of_puts_takes_and_cancellations_keeps_order_bound_and_every_item(capacity, steps):
    """A model check: producers put 0, 1, 2, ... (each put its own task, some
    cancelled while waiting, or just after a slot was handed to them), one
    reader takes. The buffer never holds more than its capacity, items come
    out in the order they went in, a cancelled put's item never comes out and
    every other item does, and no slot is lost: at the end all are free."""

    async def main() -> None:
        buffer = Buffer(capacity)
        items = aiter(buffer)
        puts: list[asyncio.Task[None]] = []
        stored: list[int] = []  # in the order the puts completed
        taken: list[int] = []

        async def put(value: int) -> None:
            await buffer.put(value)
            stored.append(value)

        for step in steps:
            if step[0] == "put":
                puts.append(asyncio.create_task(put(len(puts))))
            elif step[0] == "cancel" and puts:
                puts[step[1] % len(puts)].cancel()
            elif step[0] == "take" and buffer.statistics().fill:
                taken.append(await anext(items))
            else:
                await asyncio.sleep(0)
            assert buffer.statistics().fill <= capacity
        drain = asyncio.create_task(_collect_from(items))
        await asyncio.gather(*puts, return_exceptions=True)
        buffer.done()
        taken += await drain
        completed = [i for i, task in enumerate(puts) if not task.cancelled()]
        assert sorted(stored) == completed  # every put not cancelled stored its item, once
        assert taken == stored  # every stored item, in the order stored
        stats = buffer.statistics()
        assert stats.fill == 0 and stats.producers_waiting == 0 and buffer._free == capacity

    asyncio.run(main())


async def _collect_from(items: object) -> list[object]:
    return [x async for x in items]  # type: ignore[attr-defined]


async def test_waiting_producers_are_served_first_come_first_served():
    buffer = Buffer(1)
    await buffer.put("first")
    order: list[str] = []

    async def put(value: str) -> None:
        await buffer.put(value)
        order.append(value)

    waiting = [asyncio.create_task(put(v)) for v in ("a", "b", "c")]
    await asyncio.sleep(0)
    assert buffer.statistics().producers_waiting == 3
    waiting[1].cancel()  # b gives up: its turn passes to c
    items = aiter(buffer)
    taken = [await anext(items)]
    for _ in range(2):
        await asyncio.sleep(0)
        taken.append(await anext(items))
    await asyncio.gather(*waiting, return_exceptions=True)
    assert order == ["a", "c"] and taken == ["first", "a", "c"]


async def test_a_second_reader_while_the_first_still_waits_gets_the_items():
    """A node that stopped reading early drains its buffer again while an
    earlier reader (a feeder task) may still be waiting on it: items and the
    end still reach whichever reader asks, and nothing hangs."""
    buffer = Buffer(2)
    drained: list[int] = []
    left: list[int] = []

    async def fallback() -> None:
        async for x in buffer:
            drained.append(x)

    async def leftover() -> None:  # takes at most one item, then stops reading for good
        left.append(await anext(aiter(buffer)))
        await asyncio.Event().wait()

    reader = asyncio.create_task(fallback())
    await asyncio.sleep(0)
    stale = asyncio.create_task(leftover())
    await asyncio.sleep(0)
    assert buffer.statistics().consumers_waiting == 2

    async def produce() -> None:
        for i in range(5):
            await buffer.put(i)
        buffer.done()

    await asyncio.wait_for(asyncio.gather(produce(), reader), timeout=5)
    assert sorted(drained + left) == list(range(5)) and len(left) <= 1  # each item once
    stale.cancel()
    await asyncio.gather(stale, return_exceptions=True)
    assert buffer.statistics().consumers_waiting == 0


async def test_a_waiting_reader_cancelled_leaves_the_other_one_woken():
    buffer = Buffer(2)
    first = asyncio.create_task(anext(aiter(buffer)))
    second = asyncio.create_task(anext(aiter(buffer)))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    await buffer.put("x")
    assert await asyncio.wait_for(second, timeout=5) == "x"
