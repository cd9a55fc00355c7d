"""Client-side rate limiting counted the way servers count: sliding windows.

`SlidingWindowLimiter(rate, window, margin)` hands out send times such that
no interval of `window + margin` seconds holds more than `rate` of them.
The server measures arrivals, which trail sends by a latency that varies by
less than `margin` on a sane network, so the server's sliding `window` never
sees a (rate+1)-th request. `aiolimiter.AsyncLimiter(5, 1)` is a leaky bucket
that admits bursts (up to 9 requests in the first second), which is why it
is not used here.

Data structure: a sorted deque of reserved send times (past and future).
`reserve(now)` gives the earliest time t >= now, >= the last reservation
(first come, first served) and >= the `rate`-th latest reservation + span:
then at most rate-1 reservations fall in (t - span, t]. A cancelled waiter
gives its reservation back; removing any reservation keeps the invariant
(it can only empty a window), it just lets later callers go sooner.

All of it is synchronous bookkeeping between awaits on one event loop, so
concurrent acquirers need no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

STALL = 0.01  # later than this past its slot, a waiter was held up by a stall, not by timer jitter


class SlidingWindowLimiter:
    def __init__(self, rate: int, window: float = 1.0, *, margin: float = 0.05, name: str = "") -> None:
        if rate < 1 or window <= 0 or margin < 0:
            raise ValueError("a limiter needs rate >= 1, window > 0 and margin >= 0")
        self.rate, self.window, self.margin, self.name = rate, window, margin, name
        self.span = window + margin
        self._slots: deque[float] = deque()  # reserved send times, ascending
        self._hold_until = float("-inf")
        self.acquired = 0
        self.waited = 0.0  # total seconds callers spent waiting
        self.stalls = 0  # waiters woken too late for their slot, who reserved again

    def __repr__(self) -> str:
        pending = sum(1 for _ in self._slots)
        return (
            f"<SlidingWindowLimiter {self.name or '-'} {self.rate}/{self.window:g}s "
            f"(+{self.margin:g}s margin) reserved={pending} acquired={self.acquired} "
            f"waited={self.waited:.3f}s>"
        )

    def reserve(self, now: float) -> float:
        """Reserve and return the earliest allowed send time at or after `now`."""
        slots = self._slots
        # Reservations older than one span can no longer affect any window.
        while len(slots) > self.rate and slots[0] <= now - self.span:
            slots.popleft()
        slot = max(now, self._hold_until)
        if slots:
            slot = max(slot, slots[-1])
        if len(slots) >= self.rate:
            slot = max(slot, slots[-self.rate] + self.span)
        slots.append(slot)
        return slot

    def release(self, slot: float) -> None:
        """Give back a reservation that will not be used."""
        # Already trimmed if it was long past: then it counts no more anyway.
        with contextlib.suppress(ValueError):
            self._slots.remove(slot)

    def hold_until(self, when: float) -> None:
        """No send before `when` (e.g. a server's Retry-After), for every caller."""
        self._hold_until = max(self._hold_until, when)

    async def acquire(self) -> float:
        """Wait for a send slot; return the seconds waited (see `take`)."""
        return (await self.take())[1]

    async def take(self) -> tuple[float, float]:
        """Wait for a send slot; return (the slot, the seconds waited).
        Cancellation while waiting returns the slot.

        A waiter woken well after its slot (the process stalled: a blocking
        call, a long GC, a busy CPU) does not send late on the old slot: every
        waiter due during the stall would send at once and bunch at the
        server. It gives the slot back and reserves again from the moment it
        woke, so the reservations stay the send times the server sees."""
        loop = asyncio.get_running_loop()
        started = now = loop.time()
        retries = 0
        while True:
            slot = self.reserve(now)
            if slot <= now:
                break
            try:
                await asyncio.sleep(slot - now)
            except asyncio.CancelledError:
                self.release(slot)
                raise
            now = loop.time()
            # On time, give or take the margin or a timer's jitter (a margin
            # of 0 must not make every waiter late for ever); a waiter gets
            # a second slot at most twice, so it always gets through.
            if now - slot <= max(self.margin / 2, STALL) or retries == 2:
                break
            self.release(slot)
            self.stalls += 1
            retries += 1
        self.acquired += 1
        self.waited += now - started
        return slot, now - started

    async def on_time(self, slot: float) -> float:
        """Called right before the request goes on the wire: the slot it goes
        on. A send held up after its slot (the loop stalled while it opened
        a connection, say) would bunch with the sends due after it: it gives
        the slot back and takes a new one, so what counts is when requests
        are sent, not when their slots were granted."""
        now = asyncio.get_running_loop().time()
        if now - slot <= max(self.margin / 2, STALL):
            return slot
        self.release(slot)
        self.stalls += 1
        return (await self.take())[0]


class Limiters:
    """The limiters of one run, by name: nodes naming the same limiter share
    one budget (several nodes against one host)."""

    def __init__(self) -> None:
        self._by_name: dict[str, SlidingWindowLimiter] = {}

    def get(self, name: str, rate: int, window: float, *, margin: float = 0.05) -> SlidingWindowLimiter:
        limiter = self._by_name.get(name)
        if limiter is None:
            limiter = self._by_name[name] = SlidingWindowLimiter(rate, window, margin=margin, name=name)
        elif (limiter.rate, limiter.window, limiter.margin) != (rate, window, margin):
            raise ValueError(
                f"limiter '{name}' is {limiter.rate}/{limiter.window:g}s in one place and "
                f"{rate}/{window:g}s in another; a shared limiter has one rate"
            )
        return limiter

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._by_name.values())
