"""Several mock servers started and stopped together (for tests and `flow run`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from ._server import Clock, MockServer
from ._spec import ServerSpec


@asynccontextmanager
async def serve(
    specs: Mapping[str, ServerSpec], *, host: str = "127.0.0.1", clock: Clock | None = None
) -> AsyncIterator[dict[str, MockServer]]:
    """Start one server per entry on `host` (ephemeral ports unless a spec
    names one) and yield them by name; all are closed on exit, also when
    starting one of them fails."""
    servers = {name: MockServer(spec, name=name, host=host, clock=clock) for name, spec in specs.items()}
    started: list[MockServer] = []
    try:
        for server in servers.values():
            await server.start()
            started.append(server)
        yield servers
    finally:
        await asyncio.gather(*(server.close() for server in started), return_exceptions=True)
