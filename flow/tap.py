"""Taps: copies of the items passing out of a node, for someone watching.

    node's last stage --item--> [main output buffers]
                         |
                         +--> NodeTaps (empty: one truth test per item, nothing more)
                                 +--> Tap: deque of at most `room` items --> a client (flow.status)

Each node has one `NodeTaps`, a list of the taps attached to its main
output. The runtime tests it once per item and, only when it is not empty,
calls `offer(item)`, which never blocks and never changes what flows: the
item itself goes on to the node's readers as always, the tap holds a
reference to it (items are never mutated after they are yielded; see
flow.runtime). A tap whose client is slow fills its deque; then the items
passing are dropped for that tap and counted.

Everything here is touched only from the run's event loop: `offer` is
synchronous, so attaching or detaching a tap can never interleave with it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

ROOM = 32  # items a tap holds for its client before it drops what passes


class Tap:
    """Up to `limit` items for one client. Invariants: `accepted` items went
    into the deque (at most `room` held at once), `dropped` passed while it
    was full; once `accepted == limit` the tap takes nothing more and counts
    nothing more (its client has all it asked for, or will have)."""

    __slots__ = ("_items", "_wake", "accepted", "closed", "delivered", "dropped", "limit", "room")

    def __init__(self, limit: int, room: int = ROOM) -> None:
        if limit < 1 or room < 1:
            raise ValueError("a tap needs limit >= 1 and room >= 1")
        self.limit, self.room = limit, room
        self._items: deque[Any] = deque()
        self._wake: asyncio.Future[None] | None = None  # the client waiting for items
        self.accepted = self.delivered = self.dropped = 0
        self.closed = False  # the node's output has ended: nothing more comes

    def __repr__(self) -> str:
        return (
            f"<Tap {len(self._items)}/{self.room} held, {self.delivered} of {self.limit} delivered, "
            f"{self.dropped} dropped{', closed' if self.closed else ''}>"
        )

    def offer(self, item: Any) -> None:
        """An item passing the node: kept if there is room, else counted as dropped."""
        if self.accepted >= self.limit:
            return
        if len(self._items) >= self.room:
            self.dropped += 1
            return
        self._items.append(item)
        self.accepted += 1
        self._wake_client()

    def close(self) -> None:
        """Nothing more comes: the client takes what is held, then ends."""
        self.closed = True
        self._wake_client()

    def _wake_client(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def take(self) -> list[Any]:
        """What is held (waiting until something is, unless closed or all was
        delivered); an empty list: the tap has ended."""
        while not self._items and not self.closed and self.delivered < self.limit:
            self._wake = asyncio.get_running_loop().create_future()
            try:
                await self._wake
            finally:
                self._wake = None
        taken = list(self._items)
        self._items.clear()
        self.delivered += len(taken)
        return taken


class NodeTaps(list[Tap]):
    """The taps on one node's main output. A list, so that the runtime's
    per-item test is a plain truth test (`if taps:`) with no Python call
    while no one taps; `ended` once the node's output has ended. Totals of
    the taps that have detached are kept for the status."""

    __slots__ = ("delivered", "dropped", "ended")

    def __init__(self) -> None:
        super().__init__()
        self.ended = False
        self.delivered = self.dropped = 0

    def offer(self, item: Any) -> None:
        for tap in self:
            tap.offer(item)

    def end(self) -> None:
        """The node's output has ended: every tap ends once its client has what it holds."""
        self.ended = True
        for tap in self:
            tap.close()

    def attach(self, limit: int, room: int = ROOM) -> Tap:
        tap = Tap(limit, room)
        if self.ended:
            tap.close()
        self.append(tap)
        return tap

    def detach(self, tap: Tap) -> None:
        if tap in self:
            self.remove(tap)
            self.delivered += tap.delivered
            self.dropped += tap.dropped

    def totals(self) -> tuple[int, int, int]:
        """(taps attached, items delivered, items dropped), detached taps included."""
        delivered = self.delivered + sum(tap.delivered for tap in self)
        return len(self), delivered, self.dropped + sum(tap.dropped for tap in self)
