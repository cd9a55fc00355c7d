"""A send budget kept in Redis: one budget for every run, shard and process
that names it and uses the same store (`rate_limit: {name: N, store:
redis://HOST:PORT/DB}`).

The check is the in-process limiter's (stages.http.limiter) and the Ray
budget actor's (stages.http.leases), run by Redis itself as one Lua script,
so no two senders interleave inside it. The script runs on Redis's own
clock (TIME), the only clock every sender shares:

    grants   a sorted set of the sends granted, scored by when
    hold     a key that lives as long as a server's Retry-After holds the budget

A sender asks right before its request is written (LeaseLimiter.on_wire).
The script drops the grants older than the span (window + margin), counts
those of the last `reach`, and either records the send and answers "0" or
answers the seconds until the grant in the way leaves (each step O(log n)
in the grants kept). Answers are strings: Redis would cut a Lua number to
an integer. A number put into a string is formatted whole (%.17g): Lua's
own conversion keeps 14 digits, a tenth of a millisecond at today's time.
Needs Redis 5 or later (a script that reads TIME and then writes).

A store that cannot be reached or refuses (down, read-only, out of memory)
is asked again after 0.1, 0.3 and 1 s. Then the page fails with
`budget_unavailable` and is not sent: a send nobody recorded could break
the budget for every other sender. Keys expire a second after a span has
passed since their last grant, so a budget nobody uses leaves nothing.
Every sender checks the grants against its own `rate`: graphs naming one
budget give it one rate.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import urlsplit

from .leases import LeaseLimiter
from .limiter import SLACK, BudgetUnavailable, reach
from .urls import safe_url

LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local held = redis.call('PTTL', KEYS[2])
if held > 0 then return tostring(held / 1000) end
local rate, span, reach, slack = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - span)
local recent = redis.call('ZCOUNT', KEYS[1], string.format('(%.17g', now - reach), '+inf')
local over = recent - rate
if over < 0 then
  redis.call('ZADD', KEYS[1], now, redis.call('INCR', KEYS[3]))
  local keep = math.ceil(span * 1000) + 1000
  redis.call('PEXPIRE', KEYS[1], keep)
  redis.call('PEXPIRE', KEYS[3], keep)
  return '0'
end
local first = redis.call('ZCARD', KEYS[1]) - recent
local way = redis.call('ZRANGE', KEYS[1], first + over, first + over, 'WITHSCORES')
return tostring(tonumber(way[2]) + span + slack - now)
"""

HOLD = """
local ms = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ms then redis.call('SET', KEYS[1], '1', 'PX', ms) end
return 1
"""

PATIENCE = (0.1, 0.3, 1.0)  # seconds between the tries to reach the store, before a page fails


def check_store(url: str) -> None:
    """A `store:` flow can use: redis://HOST[:PORT][/DB] (rediss:// with TLS)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"store: expected redis://HOST[:PORT][/DB], got '{url}'")


class RedisBook:
    """One budget's keys in one store, and the two scripts."""

    def __init__(self, url: str, name: str, rate: int, window: float, margin: float) -> None:
        import redis.asyncio as redis  # the `redis` extra: only graphs that keep a budget there need it

        self.name, self.where = name, safe_url(url)  # no password in messages
        self.client = redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        key = f"flow:budget:{{{name}}}"  # {name}: the three keys in one hash slot
        self.keys = [f"{key}:grants", f"{key}:hold", f"{key}:seq"]
        span = window + margin
        self.args = [rate, span, reach(span, margin), SLACK]
        self._lease = self.client.register_script(LEASE)
        self._hold = self.client.register_script(HOLD)
        self._holding: set[asyncio.Task[Any]] = set()

    async def lease(self) -> float:
        """0.0: go now (recorded); else the seconds to wait before asking again."""
        from redis.exceptions import RedisError

        for wait in PATIENCE:
            with contextlib.suppress(RedisError, OSError):
                return float(await self._lease(keys=self.keys, args=self.args))
            await asyncio.sleep(wait)
        try:
            return float(await self._lease(keys=self.keys, args=self.args))
        except (RedisError, OSError) as exc:
            why = f"budget '{self.name}': its store {self.where} cannot be reached ({exc})"
            raise BudgetUnavailable(why) from None

    def hold_for(self, seconds: float) -> None:
        """No grant for `seconds` (a server's Retry-After), for every sender.
        Sent without waiting for it; the fetcher's own retry waits anyway."""
        task = asyncio.ensure_future(self._hold(keys=self.keys[1:2], args=[max(1, round(seconds * 1000))]))
        self._holding.add(task)
        task.add_done_callback(self._held)

    def _held(self, task: asyncio.Task[Any]) -> None:
        self._holding.discard(task)
        if not task.cancelled():
            task.exception()  # a hold that did not reach the store: the retry's own wait stands

    async def close(self) -> None:
        await asyncio.gather(*self._holding, return_exceptions=True)
        await self.client.aclose()


def redis_limiter(url: str, name: str, rate: int, window: float, margin: float) -> LeaseLimiter:
    """The limiter of budget `name` kept at `url` (closed with the run)."""
    book = RedisBook(url, name, rate, window, margin)
    return LeaseLimiter(book.lease, book.hold_for, rate, window, margin, name, closing=book.close)

