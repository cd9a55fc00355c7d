"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from mocks import MockServer, ServerSpec

StartServer = Callable[..., Awaitable[MockServer]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session; aiohttp's silent resend of idempotent requests after a
    connection error is switched off so that every request the test makes is
    exactly one request in the server's log."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        session._retry_connection = False  # private, but the only switch there is
        yield session


@pytest.fixture
async def start_mock() -> AsyncIterator[StartServer]:
    """`await start_mock(style=..., products=..., clock=...)` starts a mock server
    on an ephemeral loopback port; every server started is closed afterwards."""
    servers: list[MockServer] = []

    async def start(*, clock: Any = None, **fields: Any) -> MockServer:
        fields.setdefault("rate_limit", "off")
        server = MockServer(ServerSpec(**fields), clock=clock)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()
