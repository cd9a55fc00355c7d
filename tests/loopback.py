"""A scripted HTTP server for tests: one aiohttp handler on 127.0.0.1, on a
port the system picks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def start(path: str, handle: Handler) -> tuple[web.AppRunner, str]:
    """Serve GET `path` (an aiohttp route, e.g. "/{tail:.*}") with `handle`;
    (the runner, to `cleanup()` afterwards; the base URL)."""
    runner = web.AppRunner(web.Application(), access_log=None)
    runner.app.router.add_get(path, handle)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"
