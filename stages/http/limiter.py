"""Client-side rate limiting counted the way servers count: sliding windows.

`SlidingWindowLimiter(rate, window, margin)` sends requests such that no
interval of `span = window + margin` seconds (less `SLACK`, below) holds
more than `rate` sends.
The server measures arrivals, which trail sends by a latency that varies by
less than `margin` on a sane network, so the server's sliding `window` never
sees a (rate+1)-th request. `aiolimiter.AsyncLimiter(5, 1)` is a leaky bucket
that admits bursts (up to 9 requests in the first second), which is why it
is not used here.

Two steps per request:

- `take()` plans: it reserves the earliest slot t >= now, >= the hold (a
  Retry-After), >= the last plan (first come, first served) and >= the
  `rate`-th latest plan + span, and sleeps until then. Plans spread the
  requests out; they promise nothing.
- `on_wire(slot)`, right before the request is written to its socket (the
  session's trace hook, stages.http.session), decides, for every request:
  it goes if the sends recorded in (now - span, now] number fewer than
  `rate`, and `now`, its actual send time, is recorded. Else (`stalls`) it
  gives its plan back, waits until enough sends have left the window (less
  than a span) and checks again.

Why no such interval ever holds more than `rate` sends, by induction on the
actual send times: take any interval (s - span, s] with s its last send.
Every earlier send in it was written before that one (or just before, at
the same loop time), so when the last one checked, it was recorded at its
actual time, in (s - span, s]; the check let the last one go only with at
most rate - 1 of them there. Nothing else enters the argument: not the
plans, not a stall, not the time a connection takes to open. A send held up
after its slot is judged when it goes, and a send on time is judged against
the late ones already sent, wherever their delay put them.

Only sends count at the check, not plans waiting to be sent: a request on
time does not yield to one that has not gone yet (that one counts it when
it goes, and waits if it must). Counting those plans as well only
over-counts (the argument above needs none of them), and it cost re-takes
where nothing was over. Plans are kept apart, at the times planned, so a
delay every request shares (each opens a connection, 300 ms, say) shifts the
sends without adding up: plans a span apart give sends a span apart, and
every check passes. (Planning from the recorded sends instead, each request
would add its delay once more, window after window.)

The hold (`hold_until`) governs the plans, not the check: a request that got
its slot before a 429 came back goes if the window has room, as it would
have a moment earlier; and the check's wait for room, shorter than a span,
never waits out a long Retry-After inside the request's own timeout.

The check looks back a span less `SLACK` (or less half the margin, if that
is smaller): loop times are floats (2e-9 s apart on a monotonic clock 100
days old) and timers may fire a clock tick early, so a send exactly a span
after another must not land inside its window by a rounding error. The
margin absorbs the slack; a margin of 0 gets none.

A cancelled or stopped waiter gives its plan back: removing a plan only lets
later callers go sooner. All of it is synchronous bookkeeping between awaits
on one event loop (two sorted lists and bisect, a few µs a request), so
concurrent callers need no lock.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left, bisect_right, insort

SLACK = 1e-6  # seconds; see the module docstring


async def pause(seconds: float, stop: asyncio.Event | None) -> bool:
    """Sleep `seconds`, cut short when `stop` is set: True if it was."""
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


def reach(span: float, margin: float) -> float:
    """How far back the check right before a write counts sends: the span
    (window + margin) but a hair, so a send exactly a span ago has left."""
    return span - min(SLACK, margin / 2)


class Stopped(Exception):
    """The run stopped while a request waited for its send slot (the slot is
    given back; nothing was sent)."""


class BudgetUnavailable(Exception):
    """The place a budget is kept cannot be asked (stages.http.redis_budget):
    whether a send is allowed is unknown, so nothing was sent."""


class SlidingWindowLimiter:
    def __init__(self, rate: int, window: float = 1.0, *, margin: float = 0.05, name: str = "") -> None:
        if rate < 1 or window <= 0 or margin < 0:
            raise ValueError("a limiter needs rate >= 1, window > 0 and margin >= 0")
        self.rate, self.window, self.margin, self.name = rate, window, margin, name
        self.span = window + margin
        self._reach = reach(self.span, margin)  # the check counts sends in (now - reach, now]
        self._plans: list[float] = []  # planned send times (slots), ascending
        self._sends: list[float] = []  # actual send times within the last span, ascending
        self._hold_until = float("-inf")
        self.acquired = 0  # slots handed out by take()
        self.waited = 0.0  # total seconds callers spent waiting (for a slot, for room at the write)
        self.stalls = 0  # checks at the write that found the window full, so the request waited

    def __repr__(self) -> str:
        return (
            f"<SlidingWindowLimiter {self.name or '-'} {self.rate}/{self.window:g}s "
            f"(+{self.margin:g}s margin) planned={len(self._plans)} acquired={self.acquired} "
            f"stalls={self.stalls} waited={self.waited:.3f}s>"
        )

    def reserve(self, now: float) -> float:
        """Plan and return the earliest allowed send time at or after `now`."""
        plans = self._plans
        # Plans older than one span can no longer affect any window.
        old = min(bisect_right(plans, now - self.span), len(plans) - self.rate)
        if old > 0:
            del plans[:old]
        slot = max(now, self._hold_until)
        if plans:
            slot = max(slot, plans[-1])
        if len(plans) >= self.rate:
            slot = max(slot, plans[-self.rate] + self.span)
        plans.append(slot)
        return slot

    def release(self, slot: float) -> None:
        """Give back a plan that will not be sent on."""
        plans = self._plans
        i = bisect_left(plans, slot)
        if i < len(plans) and plans[i] == slot:  # else trimmed, long past: it counts no more anyway
            del plans[i]

    def hold_until(self, when: float) -> None:
        """No slot before `when` (e.g. a server's Retry-After), for every caller."""
        self._hold_until = max(self._hold_until, when)

    async def take(self, stop: asyncio.Event | None = None) -> tuple[float, float]:
        """Wait for a send slot; return (the slot, the seconds waited).
        Cancellation while waiting gives the slot back; so does `stop` being
        set while waiting (then `Stopped`)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        slot = self.reserve(now)
        if slot > now:
            await self._sleep(slot - now, slot, stop)
        waited = loop.time() - now
        self.acquired += 1
        self.waited += waited
        return slot, waited

    async def on_wire(self, slot: float, stop: asyncio.Event | None = None) -> float:
        """The check right before the request is written (see the module
        docstring): returns its send time, now, once the window has room;
        `Stopped` if `stop` is set while it waits for room."""
        loop = asyncio.get_running_loop()
        sends, rate = self._sends, self.rate
        while True:
            now = loop.time()
            old = bisect_right(sends, now - self.span)
            if old:
                del sends[:old]
            first = bisect_right(sends, now - self._reach)
            over = len(sends) - first - rate  # >= 0: the window is full
            if over < 0:
                sends.append(now)  # every recorded send is <= now: still sorted
                return now
            # Room comes when the send `over + 1` places into the window leaves it.
            self.release(slot)
            self.stalls += 1
            slot = sends[first + over] + self.span + SLACK
            insort(self._plans, slot)  # planned: later takers leave it its place
            await self._sleep(slot - now, slot, stop)
            self.waited += loop.time() - now

    async def acquire(self, stop: asyncio.Event | None = None) -> float:
        """`take` and `on_wire` at once, for a caller that sends the moment
        this returns (the tests' senders); the seconds waited."""
        started = asyncio.get_running_loop().time()
        slot, _ = await self.take(stop)
        await self.on_wire(slot, stop)
        return asyncio.get_running_loop().time() - started

    async def _sleep(self, seconds: float, slot: float, stop: asyncio.Event | None) -> None:
        """Sleep until the plan `slot` is due; give it back if cancelled or
        stopped meanwhile."""
        try:
            stopped = await pause(seconds, stop)
        except BaseException:
            self.release(slot)
            raise
        if stopped:
            self.release(slot)
            raise Stopped


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
