"""The run's HTTP sessions (one connection pool), and the hook that holds
every limited request to its limiter at the moment it goes on the wire."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from flow._tls import import_deferring_ca_store

if TYPE_CHECKING:
    import aiohttp
else:  # the CA store loads at the first TLS handshake, not at import (flow/_tls.py)
    aiohttp = import_deferring_ca_store("aiohttp")

__all__ = ["UNLIMITED", "Sending", "Sessions", "Unlimited", "make_session"]


def make_session(*, connections: int = 100) -> aiohttp.ClientSession:
    """A ClientSession with the on-wire hook (Sessions.limited; tests use it alone).

    No per-host connection limit: each Fetcher bounds its own requests in
    flight before it takes a limiter slot, so a request never waits for a
    pooled connection after its slot (which would bunch arrivals at the
    server; the rate test caught exactly that with a per-host limit of 4)."""
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0)
    on_wire = aiohttp.TraceConfig()
    on_wire.on_request_headers_sent.append(_on_wire)
    return _no_resend(aiohttp.ClientSession(connector=connector, trace_configs=[on_wire]))


def _no_resend(session: aiohttp.ClientSession) -> aiohttp.ClientSession:
    """aiohttp resends an idempotent request once, invisibly, when its
    connection breaks; that extra attempt would bypass the limiter and the
    attempt count, so it is switched off (the attribute is private, but the
    only switch; checked in aiohttp 3.14's client.py)."""
    session._retry_connection = False
    return session


class Sessions:
    """The run's two ClientSessions over one connection pool and one cookie
    jar. `limited` carries the hook that holds a request to its limiter as
    it goes on the wire (make_session); `plain` has none, for the requests
    no rate_limit stage has seen: aiohttp runs its trace signals for every
    request of a session that has one (~850 Python opcodes a request, a
    fifth of its request path), whatever the request."""

    def __init__(self, connections: int = 100) -> None:
        self.limited = make_session(connections=connections)
        self.plain = _no_resend(
            aiohttp.ClientSession(
                connector=self.limited.connector, connector_owner=False, cookie_jar=self.limited.cookie_jar
            )
        )

    async def close(self) -> None:
        try:
            await self.plain.close()
        finally:
            await self.limited.close()  # owns the connection pool


class Sending:
    """A request's send slot, and the run's stop event, handed to the
    session's trace hook."""

    __slots__ = ("limiter", "sent", "slot", "stop")

    def __init__(self, limiter: Any, slot: float, stop: asyncio.Event | None = None) -> None:
        self.limiter, self.slot, self.stop = limiter, slot, stop
        self.sent: float | None = None  # loop time it went on the wire


async def _on_wire(session: Any, context: Any, params: Any) -> None:
    """aiohttp awaits this right before it writes the request to the socket
    (nothing suspends between the two; checked in aiohttp 3.14's
    client_reqrep.py and http_writer.py): the moment the limiter checks the
    send against the sends before it (SlidingWindowLimiter.on_wire), whatever
    held the request up since its slot (opening a connection, a stall). An
    exception here (`Stopped`) propagates out of the request unchanged, with
    nothing written."""
    sending = context.trace_request_ctx
    if isinstance(sending, Sending):
        await sending.limiter.on_wire(sending.slot, sending.stop)
        sending.sent = asyncio.get_running_loop().time()


class Unlimited:
    """The limiter of a request no rate_limit stage has seen."""

    async def take(self, stop: asyncio.Event | None = None) -> tuple[float, float]:
        return 0.0, 0.0

    async def on_wire(self, slot: float, stop: asyncio.Event | None = None) -> float:
        return slot

    def hold_until(self, when: float) -> None:
        pass


UNLIMITED = Unlimited()
