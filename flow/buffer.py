"""Bounded buffers: every edge of a running graph is one.

A `Buffer` is a FIFO of at most `capacity` items between the producers that
write into it (one per upstream node, several for a fan-in) and the one node
that reads it. A full buffer blocks its producers, so a slow consumer slows
everything upstream of it down to the HTTP requests: memory stays flat
however many items flow. The buffer ends once every producer has called
`done()` and the reader has taken what was left.

Concurrency: everything happens on the one event loop, so no lock. A deque
holds the items and end markers in order; a free slot goes to the producer
that has waited longest (FIFO), handed over directly when the reader takes
an item, so a producer arriving later cannot take that slot (it may take
another one freed before the first producer resumes). A producer
cancelled after it was handed a slot hands it on. (An asyncio.Queue with a
Semaphore did the same at about three times the Python work per item.)
`statistics()` can be read at any time (telemetry, progress display).
"""

from __future__ import annotations

import asyncio
from collections import deque
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
        # Items and end markers; end markers never count against the capacity,
        # so `done()` never blocks.
        self._queue: deque[Any] = deque()
        self._free = capacity  # slots no item holds and no waiting producer was handed
        self._writers: deque[asyncio.Future[None]] = deque()  # producers waiting for a slot, oldest first
        # Readers waiting for an item: one in a graph, but a node that stops
        # reading early may drain the buffer again while an earlier reader
        # (a feeder task) still waits, so every waiting reader is woken.
        self._readers: list[asyncio.Future[None]] = []
        self._open = producers
        self._total = producers
        self._ended = 0  # end markers taken; the buffer ends at _total
        self._items = 0  # real items in the queue
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
        if self._free:  # (a free slot means no producer waits: _release hands slots on first)
            self._free -= 1
        else:
            await self._slot()
        self._queue.append(item)
        self._items += 1
        self._put += 1
        self._wake_reader()

    async def _slot(self) -> None:
        """Wait until a slot is handed over (producers in arrival order)."""
        waiter = asyncio.get_running_loop().create_future()
        self._writers.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot, then cancelled: hand it on
            elif waiter in self._writers:  # (else _release already passed over it)
                self._writers.remove(waiter)
            raise

    def _release(self) -> None:
        """A slot is free: to the longest-waiting producer, else kept."""
        writers = self._writers
        while writers:
            waiter = writers.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    def _wake_reader(self) -> None:
        for reader in self._readers:
            if not reader.done():
                reader.set_result(None)

    def done(self) -> None:
        """One producer has finished (normally or not)."""
        if self._open == 0:
            raise RuntimeError(f"buffer {self.name}: done() called more often than it has producers")
        self._open -= 1
        self._queue.append(_END)
        self._wake_reader()

    async def __aiter__(self) -> AsyncIterator[Any]:
        """The items, until every producer is done. Iterating again after an
        early stop resumes where the last iteration left off."""
        queue = self._queue
        if self._ended == self._total:
            return
        while True:
            if not queue:  # wait for an item (woken, a reader looks again)
                waiter = asyncio.get_running_loop().create_future()
                self._readers.append(waiter)
                self._consumers_waiting += 1
                try:
                    await waiter
                finally:
                    self._readers.remove(waiter)
                    self._consumers_waiting -= 1
                continue
            item = queue.popleft()
            if item is _END:
                self._ended += 1
                if self._ended == self._total:
                    return
                continue
            self._items -= 1
            self._taken += 1
            self._release()
            yield item

    def statistics(self) -> BufferStats:
        return BufferStats(
            self.capacity,
            self._items,
            self._open,
            len(self._writers),
            self._consumers_waiting,
            self._put,
            self._taken,
        )
