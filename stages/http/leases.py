"""A send budget that spans shards: a Ray actor keeps the sends, each
shard asks it before every send (a lease).

In one process a budget is a sliding-window limiter whose check, right
before a request is written, counts the sends recorded in the last span
(stages.http.limiter). Across processes the same check runs in one place,
the budget's actor (`BudgetBook`), on the actor's clock: a sender asks
(`lease`), the actor counts its recorded grants in (now - reach, now] and
either records `now` and says go, or says how long to wait. The sender
writes its request the moment the answer comes. Between the grant and the
request's arrival at the server lie the answer's way back (about a
millisecond between processes of one machine) and the request's own
latency: as in one process, the `margin` absorbs their variation, so the
server's window never sees a (rate+1)-th request.

`LeaseLimiter` is the shard's side: the limiter interface the fetcher
uses (`take`, `on_wire`, `release`, `hold_until`), its check a lease. A
graph marks such a budget `rate_limit: {name: N, across_shards: true}`:
its sources may then run in different shards (flow.placement does not
keep them together), and under `flow run --cluster` the limiter is a
lease (`lease_limiter`: the budget's actor is named by the cluster run and
the budget, made by the first shard that asks); in one process it is the
ordinary limiter.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_right
from collections.abc import Awaitable, Callable
from typing import Any

from .limiter import SLACK, Stopped, reach


class BudgetBook:
    """The budget's actor body: the grants of the last span, on its clock."""

    def __init__(self, rate: int, window: float, margin: float) -> None:
        self.rate, self.span = rate, window + margin
        self.reach = reach(self.span, margin)
        self.grants: list[float] = []
        self.hold = float("-inf")
        self.granted = 0

    def lease(self) -> float:
        """0.0: go now (recorded); else the seconds to wait before asking again."""
        now = time.monotonic()
        if now < self.hold:
            return self.hold - now
        old = bisect_right(self.grants, now - self.span)
        if old:
            del self.grants[:old]
        first = bisect_right(self.grants, now - self.reach)
        over = len(self.grants) - first - self.rate
        if over < 0:
            self.grants.append(now)
            self.granted += 1
            return 0.0
        return self.grants[first + over] + self.span + SLACK - now

    def hold_for(self, seconds: float) -> None:
        """No grant for `seconds` (a server's Retry-After), for every shard."""
        self.hold = max(self.hold, time.monotonic() + seconds)

    def count(self) -> int:
        return self.granted


class LeaseLimiter:
    """A limiter whose every send is leased from a budget kept elsewhere:
    `lease()` awaits 0.0 (go) or the seconds to wait (a BudgetBook actor's,
    or stages.http.redis_budget's), `hold(seconds)` holds the whole budget."""

    def __init__(self, lease: Callable[[], Awaitable[float]], hold: Callable[[float], Any], rate: int,
                 window: float, margin: float, name: str,
                 closing: Callable[[], Awaitable[None]] | None = None) -> None:  # fmt: skip
        self.lease, self.hold, self._closing = lease, hold, closing
        self.rate, self.window, self.margin, self.name = rate, window, margin, name
        self.span = window + margin
        self.acquired, self.waited, self.stalls = 0, 0.0, 0

    async def take(self, stop: asyncio.Event | None = None) -> tuple[float, float]:
        """No plan to make: the lease at the write decides (a slot now)."""
        self.acquired += 1
        return asyncio.get_running_loop().time(), 0.0

    async def on_wire(self, slot: float, stop: asyncio.Event | None = None) -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            wait = await self.lease()
            if wait <= 0:
                self.waited += loop.time() - started
                return loop.time()
            self.stalls += 1
            if stop is not None and stop.is_set():
                raise Stopped
            await asyncio.sleep(wait)

    async def acquire(self, stop: asyncio.Event | None = None) -> float:
        started = asyncio.get_running_loop().time()
        await self.on_wire(0.0, stop)
        return asyncio.get_running_loop().time() - started

    def release(self, slot: float) -> None:
        """Nothing planned, nothing to give back: a lease is only taken at the write."""

    def hold_until(self, when: float) -> None:
        self.hold(max(0.0, when - asyncio.get_running_loop().time()))

    async def close(self) -> None:
        """The run has ended: let go of the budget's connection, if any."""
        if self._closing is not None:
            await self._closing()


def lease_limiter(cluster: str, name: str, rate: int, window: float, margin: float) -> LeaseLimiter:
    """The shard's limiter for budget `name` of cluster run `cluster`."""
    import ray

    # Detached: the shard that made it may finish first; it lives as long as the
    # cluster (flow's local cluster is stopped at the end of the run).
    book = ray.remote(num_cpus=0)(BudgetBook).options(
        name=f"flow-budget-{cluster}-{name}", get_if_exists=True, lifetime="detached"
    ).remote(rate, window, margin)
    return LeaseLimiter(book.lease.remote, book.hold_for.remote, rate, window, margin, name)
