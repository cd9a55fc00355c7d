"""`flow serve`: a graph as a long-running service, its stages serving HTTP.

A stage that takes requests (a job intake, a webhook) registers its routes
with `ctx.route(method, path, handler)` when it starts; `flow serve` runs one
aiohttp server for the whole graph, on 127.0.0.1 unless told otherwise, and
dispatches each request to the route that matches it. Paths take `{name}`
segments (`/jobs/{id}`), passed to the handler as keyword arguments:

    async def handler(request: aiohttp.web.Request, **segments) -> aiohttp.web.Response

The engine adds `GET /health`: the service's state (`ok`, or `stopping`
once a stop began) and its graph's nodes, buffers, breakers and limiters,
as `flow run --status-port` shows them. A request for a path no stage has
registered is a 404 (405 for another method), with the routes there are.

Routes are matched in the order registered; handlers run on the graph's
event loop, so they read and change what the stages hold without locks.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

Handler = Callable[..., Awaitable[web.StreamResponse]]
_SEGMENT = re.compile(r"\{(\w+)\}")
_encode = msgspec.json.Encoder().encode


class Routes:
    """Every route the graph's stages registered: (method, pattern) -> handler."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, str, re.Pattern[str], Handler]] = []

    def add(self, method: str, path: str, handler: Handler) -> None:
        method = method.upper()
        if any(m == method and p == path for m, p, _, _ in self._routes):
            raise ValueError(f"{method} {path} is served by another stage already")
        self._routes.append((method, path, _pattern(path), handler))

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str]] | str:
        """The handler and its segments, or why none ("405", "404")."""
        allowed = False
        for route_method, _, pattern, handler in self._routes:
            found = pattern.match(path)
            if found is not None:
                if route_method == method:
                    return handler, found.groupdict()
                allowed = True
        return "405" if allowed else "404"

    def listed(self) -> list[str]:
        return [f"{method} {path}" for method, path, _, _ in self._routes]


def _pattern(path: str) -> re.Pattern[str]:
    """`/jobs/{id}` -> a regex with a named group per `{segment}`."""
    parts = []
    for part in path.split("/"):
        named = _SEGMENT.fullmatch(part)
        parts.append(f"(?P<{named[1]}>[^/]+)" if named else re.escape(part))
    return re.compile("^" + "/".join(parts) + "$")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer (msgspec-encoded), the one way stages answer."""
    return web.Response(body=_encode(data), status=status, content_type="application/json", headers=headers)


class ServiceServer:
    """The HTTP server of `flow serve`: the stages' routes and /health."""

    def __init__(self, runtime: Any, routes: Routes, host: str = "127.0.0.1", port: int = 8000) -> None:
        self.runtime, self.routes, self.host, self.port = runtime, routes, host, port
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application(client_max_size=1024 * 1024)  # a job's payload: at most 1 MiB
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://[{self.host}]:{self.port}" if ":" in self.host else f"http://{self.host}:{self.port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET" and request.path == "/health":
            return self._health()
        found = self.routes.match(request.method, request.path)
        if isinstance(found, str):
            why = "no such route" if found == "404" else f"{request.method} is not served here"
            return json_response({"error": why, "routes": ["GET /health", *self.routes.listed()]},
                                 status=int(found))  # fmt: skip
        handler, segments = found
        return await handler(request, **segments)

    def _health(self) -> web.Response:
        from .status import View

        status = View(self.runtime).status()
        stopping = self.runtime.resources.stopping.is_set()
        body = {"status": "stopping" if stopping else "ok", "graph": msgspec.to_builtins(status)}
        return json_response(body, status=503 if stopping else 200)
