"""Scripted HTTP servers for tests, on 127.0.0.1 at a port the system picks:
one aiohttp handler (`start`), or an API that pages records in any of
paginate's five styles and keeps its own log and truth (`PagedAPI`)."""

from __future__ import annotations

import asyncio
import math
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def start(path: str, handle: Handler, tls: ssl.SSLContext | None = None) -> tuple[web.AppRunner, str]:
    """Serve GET `path` (an aiohttp route, e.g. "/{tail:.*}") with `handle`,
    over TLS with `tls`; (the runner, to `cleanup()` afterwards; the base URL)."""
    runner = web.AppRunner(web.Application(), access_log=None)
    runner.app.router.add_get(path, handle)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"{'https' if tls else 'http'}://127.0.0.1:{port}"


QUERY = {"page": ("page", "per_page"), "skip_limit": ("skip", "limit"), "offset": ("offset", "limit"),
         "link": ("_page", "_limit"), "cursor": ("cursor", "limit")}  # fmt: skip
DEEP = b'{"a":' * 10_000 + b"1" + b"}" * 10_000  # one record nested 10,000 deep
Script = Callable[["PagedAPI", web.Request, str, int], web.Response | None]


class PagedAPI:
    """`GET /items` pages records 1..n in `style` (pages of at most 100), the
    total told the style's way (`total`: "" the count, None not at all, else
    that text); `same`: every page is the whole list. `script(api, request,
    position, attempt)` may answer instead (None: the page; `attempt` counts
    from 0 per position). `deep`: the page at that position gets one more
    record, nested 10,000 deep. Its log: (loop time, path, query, headers,
    status); its truth: `held` (every id), `served` (ids that went out in
    good pages: a page with the deep record is none), `answered` (positions
    answered with a well-formed page)."""

    def __init__(self, style: str, n: int = 200, *, total: str | None = "", same: bool = False,
                 deep: str | None = None, script: Script | None = None) -> None:  # fmt: skip
        self.style, self.n, self.total, self.same, self.deep, self.script = (
            style,
            n,
            total,
            same,
            deep,
            script,
        )
        self.records = [{"id": i, "title": f"Lamp {i}", "price": 10 + i, "category": "lamps"} for i in range(1, n + 1)]  # fmt: skip
        self.held, self.served, self.answered = {str(i) for i in range(1, n + 1)}, set[str](), set[str]()
        self.attempts: Counter[str] = Counter()
        self.log: list[tuple[float, str, dict[str, str], dict[str, str], int]] = []

    async def start(self, tls: ssl.SSLContext | None = None) -> str:
        """The collection's URL (https with `tls`)."""
        self.runner, url = await start("/{tail:.*}", self.handle, tls)
        return f"{url}/items"

    async def close(self) -> None:
        await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.Response:
        position, size = QUERY[self.style]
        key = request.query.get(position, "")
        attempt, self.attempts[key] = self.attempts[key], self.attempts[key] + 1
        response = self.script(self, request, key, attempt) if self.script else None
        response = response or self.page(key, int(request.query.get(size, "20")))
        t = asyncio.get_running_loop().time()
        self.log.append((t, request.path, dict(request.query), dict(request.headers), response.status))
        return response

    def page(self, key: str, asked: int) -> web.Response:
        limit = min(asked, 100)
        offset = (int(key or 1) - 1) * limit if self.style in ("page", "link") else int(key or 0)
        rows = self.records if self.same else self.records[offset : offset + limit]
        body: Any = rows
        headers = {}
        if self.style == "link" and self.total is not None:
            headers["X-Total-Count"] = self.total or str(self.n)
        elif self.style == "page" and self.total is not None:
            body = {"data": rows, "total_pages": math.ceil(self.n / limit)}
        elif self.style == "skip_limit":
            body = {"products": rows, "total": self.n, "skip": offset, "limit": len(rows)}
        elif self.style == "cursor":
            body = {"data": rows, "next_cursor": str(offset + limit) if offset + limit < self.n else None}
        encoded = msgspec.json.encode(body)
        self.answered.add(key)
        if key == self.deep:  # the deep record last, behind the page's records
            encoded = encoded[:-1] + b"," + DEEP + b"]"
        else:
            self.served.update(str(row["id"]) for row in rows)
        return web.Response(body=encoded, headers=headers, content_type="application/json")
