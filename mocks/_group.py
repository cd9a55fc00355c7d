"""Several mock servers started and stopped together (for tests and `flow run`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from ._server import Clock, MockServer
from ._spec import VENDOR_STYLES, ServerSpec

if TYPE_CHECKING:
    from .vendors import VendorServer


def make_server(
    spec: ServerSpec, *, name: str = "mock", host: str = "127.0.0.1", clock: Clock | None = None
) -> MockServer | VendorServer:
    """The server of a spec's style, not started: a catalogue API
    (MockServer) or a vendor (mocks.vendors.VendorServer)."""
    if spec.style in VENDOR_STYLES:
        from .vendors import VendorServer

        return VendorServer(spec, name=name, host=host, clock=clock)
    return MockServer(spec, name=name, host=host, clock=clock)


@asynccontextmanager
async def serve(
    specs: Mapping[str, ServerSpec], *, host: str = "127.0.0.1", clock: Clock | None = None
) -> AsyncIterator[dict[str, MockServer | VendorServer]]:
    """Start one server per entry on `host` (ephemeral ports unless a spec
    names one) and yield them by name; all are closed on exit, also when
    starting one of them fails."""
    servers = {name: make_server(spec, name=name, host=host, clock=clock) for name, spec in specs.items()}
    started: list[MockServer | VendorServer] = []
    try:
        for server in servers.values():
            await server.start()
            started.append(server)
        yield servers
    finally:
        await asyncio.gather(*(server.close() for server in started), return_exceptions=True)
