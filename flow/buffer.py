"""Bounded buffers: every edge of a running graph is one.

A `Buffer` is a FIFO of at most `capacity` items between the producers that
write into it (one per upstream node, several for a fan-in) and the one node
that reads it. A full buffer blocks its producers, so a slow consumer slows
everything upstream of it down to the HTTP requests: memory stays flat
however many items flow. The buffer ends once every producer has called
`done()` and the reader has taken what was left.

Concurrency: an asyncio.Queue underneath; the waiting counters are changed
only around its awaits, on the one event loop, so they need no lock.
`statistics()` can be read at any time (telemetry, progress display).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

_END = object()  # one per producer that is done


@dataclass(frozen=True)
class BufferStats:
    capacity: int
    fill: int
    producers: int  # producers still open
    producers_waiting: int  # blocked on a full buffer
    consumers_waiting: int  # blocked on an empty buffer
    put: int  # items written so far
    taken: int  # items read so far


class Buffer:
    def __init__(self, capacity: int, producers: int = 1, name: str = "") -> None:
        if capacity < 1 or producers < 1:
            raise ValueError("a buffer needs capacity >= 1 and at least one producer")
        self.name = name
        self.capacity = capacity
        # One extra slot per producer for its end marker, so `done()` never
        # blocks and never counts against the capacity of real items.
        self._queue: asyncio.Queue[Any] = asyncio.Queue(capacity + producers)
        self._open = producers
        self._total = producers
        self._ended = 0  # end markers taken; the buffer ends at _total
        self._items = 0  # real items in the queue
        self._space = asyncio.Semaphore(capacity)
        self._producers_waiting = 0
        self._consumers_waiting = 0
        self._put = 0
        self._taken = 0

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<Buffer {self.name} {s.fill}/{s.capacity} open={s.producers} "
            f"waiting: producers={s.producers_waiting} consumers={s.consumers_waiting}>"
        )

    async def put(self, item: Any) -> None:
        if self._space.locked():
            self._producers_waiting += 1
            try:
                await self._space.acquire()
            finally:
                self._producers_waiting -= 1
        else:
            await self._space.acquire()  # free: returns without suspending
        self._queue.put_nowait(item)
        self._items += 1
        self._put += 1

    def done(self) -> None:
        """One producer has finished (normally or not)."""
        if self._open == 0:
            raise RuntimeError(f"buffer {self.name}: done() called more often than it has producers")
        self._open -= 1
        self._queue.put_nowait(_END)

    async def __aiter__(self) -> AsyncIterator[Any]:
        """The items, until every producer is done. Iterating again after an
        early stop resumes where the last iteration left off."""
        queue = self._queue
        if self._ended == self._total:
            return
        while True:
            if queue.empty():
                self._consumers_waiting += 1
                try:
                    item = await queue.get()
                finally:
                    self._consumers_waiting -= 1
            else:
                item = queue.get_nowait()
            if item is _END:
                self._ended += 1
                if self._ended == self._total:
                    return
                continue
            self._items -= 1
            self._taken += 1
            self._space.release()
            yield item

    def statistics(self) -> BufferStats:
        return BufferStats(
            self.capacity,
            self._items,
            self._open,
            self._producers_waiting,
            self._consumers_waiting,
            self._put,
            self._taken,
        )
