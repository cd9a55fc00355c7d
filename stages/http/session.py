"""The run's one HTTP session, and the hook that keeps every request on its
limiter slot up to the moment it goes on the wire."""

from __future__ import annotations

from typing import Any

import aiohttp

__all__ = ["UNLIMITED", "Sending", "Unlimited", "make_session"]


def make_session(*, connections: int = 100) -> aiohttp.ClientSession:
    """The run's one ClientSession.

    No per-host connection limit: each Fetcher bounds its own requests in
    flight before it takes a limiter slot, so a request never waits for a
    pooled connection after its slot (which would bunch arrivals at the
    server; the rate test caught exactly that with a per-host limit of 4).
    aiohttp resends an idempotent request once, invisibly, when its
    connection breaks; that extra attempt would bypass the limiter and the
    attempt count, so it is switched off (the attribute is private, but the
    only switch; checked in aiohttp 3.14's client.py)."""
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0)
    on_wire = aiohttp.TraceConfig()
    on_wire.on_request_headers_sent.append(_on_wire)
    session = aiohttp.ClientSession(connector=connector, trace_configs=[on_wire])
    session._retry_connection = False
    return session


class Sending:
    """A request's send slot, handed to the session's trace hook."""

    __slots__ = ("limiter", "slot")

    def __init__(self, limiter: Any, slot: float) -> None:
        self.limiter, self.slot = limiter, slot


async def _on_wire(session: Any, context: Any, params: Any) -> None:
    """aiohttp awaits this right before it writes the request to the socket
    (nothing suspends between the two; checked in aiohttp 3.14's
    client_reqrep.py and http_writer.py): the last moment to check the send
    is still on its slot. Sending a request may suspend (opening a
    connection), and a stall there would send it late, in the window of the
    sends due after it."""
    sending = context.trace_request_ctx
    if isinstance(sending, Sending):
        sending.slot = await sending.limiter.on_time(sending.slot)


class Unlimited:
    """The limiter of a request no rate_limit stage has seen."""

    async def acquire(self) -> float:
        return 0.0

    async def take(self) -> tuple[float, float]:
        return 0.0, 0.0

    async def on_time(self, slot: float) -> float:
        return slot

    def hold_until(self, when: float) -> None:
        pass


UNLIMITED = Unlimited()
