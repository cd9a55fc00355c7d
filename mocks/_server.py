"""One mock API server: the request pipeline, the request log and ground truth.

Every request to the API goes through the same steps, in this order:

    arrive -> log (t, path, query) -> rate limit (429) -> unknown path (404)
           -> API key (401) -> outage window (503) -> page query (400)
           -> fault draw -> latency -> answer (or the fault) -> record served ids

Paths under `/__` are the reserved observation routes (`/__stats`,
`/__reset`, `/__health`): never rate limited, never faulted, never logged.

Concurrency: handlers run on one event loop; everything that touches shared
state (log, limiter, attempt counters, served bitmap) runs between awaits,
so it is atomic without locks. The only awaits are the injected latency,
which happens after the arrival is logged and before the answer is built.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from flow._tls import import_deferring_ca_store

from ._catalogue import Catalogue
from ._faults import HTML_PAGE, FaultPlan, invalid_json, truncated
from ._ratelimit import SlidingWindowLimit, retry_after_header
from ._spec import ServerSpec
from .styles import BadRequest, make_style

if TYPE_CHECKING:
    from aiohttp import web
else:  # the mocks serve plain HTTP: no CA store loaded at import (flow/_tls.py)
    web = import_deferring_ca_store("aiohttp.web")

# One request-log entry is a list in this order (cheap to append on the hot path).
_JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}
_LOG_FIELDS = ("t", "method", "path", "query", "status", "fault", "latency")


class Clock(Protocol):
    def now(self) -> float: ...
    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Monotonic time and real (non-blocking) asyncio sleeps."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class LoopClock:
    """The running event loop's clock: virtual under flow.testing's
    VirtualTimeLoop, so a server and its clients share one timeline."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """Virtual time for tests: `advance()` moves it; sleeps return at once.

    Injected latencies and hangs are recorded in `slept` instead of waited
    out, so a test of a 30 s hang takes microseconds.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await asyncio.sleep(0)


def catalogue_of(spec: ServerSpec) -> Catalogue:
    """The catalogue a spec describes (its size, seed and defects)."""
    return Catalogue(
        spec.products,
        spec.seed,
        page_size=spec.page_size,
        heterogeneity=spec.heterogeneity,
        defect_rate=spec.defect_rate,
        duplicate_rate=spec.duplicate_rate,
    )


class Listening:
    """What every mock server shares: its spec, name, address and clock, its
    rate limit and faults, an aiohttp low-level server on it (handler
    cancellation on, no access log), JSON answers, and use as `async with`.
    A subclass sets `path` and `_handle`, says what it holds (`_held`, for
    its repr), and resets its state in `start` once listening."""

    path: str  # the API's own path, e.g. /products

    def __init__(self, spec: ServerSpec, name: str, host: str, clock: Clock | None) -> None:
        self.spec, self.name, self.host = spec, name, host
        self.clock: Clock = clock or SystemClock()
        rate = spec.timing.rate
        self.limiter = SlidingWindowLimit(*rate) if rate else None
        self.faults = FaultPlan(spec)
        self._encode = msgspec.json.Encoder().encode
        self._runner: web.ServerRunner | None = None
        self.port = 0

    def __repr__(self) -> str:
        state = "running" if self._runner else "stopped"
        return (f"<{type(self).__name__} {self.name} {self.spec.style} {state} url={self.url or '-'} "
                f"{self._held()} limiter={self.limiter!r}>")  # fmt: skip

    def _held(self) -> str:
        raise NotImplementedError  # what the server holds, for its repr: "requests=3"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}" if self.port else ""

    @property
    def api_url(self) -> str:
        """The API's URL, e.g. `http://127.0.0.1:8001/products`."""
        return self.url + self.path

    async def _listen(self) -> None:
        # handler_cancellation: a client that gives up on a hung request
        # cancels its handler, so hangs do not pile up after client timeouts.
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)  # type: ignore[attr-defined]
        self._runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.spec.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop_listening(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def start(self) -> str:
        raise NotImplementedError  # listen, then reset the subclass's state

    async def close(self) -> None:
        await self._stop_listening()

    async def __aenter__(self) -> Any:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _json(self, body: Any, status: int, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(
            body=self._encode(body), status=status, headers=headers, content_type="application/json"
        )


class MockServer(Listening):
    """A mock API on 127.0.0.1. Use `async with MockServer(spec) as server:`."""

    def __init__(
        self,
        spec: ServerSpec | None = None,
        *,
        name: str = "mock",
        host: str = "127.0.0.1",
        clock: Clock | None = None,
    ) -> None:
        super().__init__(spec or ServerSpec(), name, host, clock)
        self.style = make_style(self.spec.style, self.spec.seed)
        self.path = self.style.path
        self.catalogue = catalogue_of(self.spec)
        self._api_key = self.spec.required_api_key
        self._in_flight = 0  # API requests being answered (hangs and latency included)
        self._idle = asyncio.Event()
        self._reset_state()

    def _held(self) -> str:
        return f"requests={len(self._log)}"

    # --- lifecycle -----------------------------------------------------------
    async def start(self) -> str:
        await self._listen()
        self._reset_state()
        return self.url

    def _reset_state(self) -> None:
        """Forget everything observed: log, served ids, limiter, attempts, start time."""
        self._started = self.clock.now()
        self._cpu_started = time.process_time()
        self._log: list[list[Any]] = []
        self._served = bytearray(self.spec.products)
        self._served_records = 0
        if self.limiter:
            self.limiter.reset()
        self.faults.reset()

    reset = _reset_state

    async def idle(self) -> None:
        """Return once no API request is being answered (e.g. a hang was cancelled)."""
        while self._in_flight:
            self._idle.clear()
            await self._idle.wait()

    # --- the request pipeline ------------------------------------------------
    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path.startswith("/__"):
            return self._admin(request)
        t = self.clock.now() - self._started
        query = dict(request.query)  # first value of a repeated parameter
        entry: list[Any] = [t, request.method, request.path, query, None, None, 0.0]
        self._log.append(entry)
        self._in_flight += 1
        try:
            response = await self._answer(request, t, query, entry)
        except asyncio.CancelledError:
            entry[4] = 499  # client closed the request (nginx's code)
            raise
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()
        if response is None:  # connection reset: no status at all
            return web.Response()  # never sent: the transport is gone
        entry[4] = response.status
        return response

    async def _answer(
        self, request: web.BaseRequest, t: float, query: dict[str, str], entry: list[Any]
    ) -> web.Response | None:
        if self.limiter is not None and not self.limiter.admit(t):
            entry[5] = "rate_limited"
            return self._too_many(t)
        if request.path != self.style.path:
            entry[5] = "not_found"
            return self._json({**self.style.error_body(f"no route {request.path}")}, 404)
        if self._api_key is not None and request.headers.get("x-api-key") != self._api_key:
            entry[5] = "unauthorized"
            missing = "x-api-key" not in request.headers
            message = "Missing API key" if missing else "Invalid API key"
            return self._json({"error": message, "how_to_get_one": "https://reqres.in/signup"}, 401)
        if self.faults.outages and self.faults.in_outage(t):
            entry[5] = "outage"
            return self._json(self.style.error_body("Service Unavailable"), self.faults.outage_status)
        if request.method not in {"GET", "HEAD"}:
            entry[5] = "bad_method"
            return self._json(self.style.error_body(f"{request.method} not allowed"), 405)
        try:
            page = self.style.window(
                query,
                default=self.spec.page_size,
                maximum=self.spec.max_page_size,
                total=self.spec.products,
            )
        except BadRequest as bad:
            entry[5] = "bad_request"
            return self._json(bad.body, 400)

        decision = self.faults.decide(request.path, request.query_string)
        entry[5], entry[6] = decision.fault, decision.latency
        if decision.latency > 0:
            await self.clock.sleep(decision.latency)
        if decision.fault == "error":
            return self._json(self.style.error_body("Internal Server Error"), decision.status)
        if decision.fault == "reset":
            self._reset_connection(request)
            return None
        if decision.fault == "html":
            return web.Response(body=HTML_PAGE, content_type="text/html", charset="utf-8")

        stop = min(page.offset + page.limit, self.spec.products)
        reply = self.style.respond(
            page,
            self.style.render_page(self.catalogue, page.offset, stop),
            total=self.spec.products,
            base_url=f"{request.scheme}://{request.host}" if self.style.links else "",
            query=query,
        )
        body = self._encode(reply.body)
        if decision.fault == "truncate":
            body = truncated(body)
        elif decision.fault == "invalid_json":
            body = invalid_json(body)
        else:
            if stop > page.offset:
                self._served[page.offset : stop] = b"\x01" * (stop - page.offset)
                self._served_records += stop - page.offset
        return web.Response(body=body, headers={**reply.headers, **_JSON_HEADERS})

    def _too_many(self, t: float) -> web.Response:
        assert self.limiter is not None
        wait = self.limiter.retry_after(t)
        headers = {
            "Retry-After": retry_after_header(wait),
            "RateLimit-Limit": str(self.limiter.limit),
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": retry_after_header(wait),
        }
        body = self.style.error_body(
            f"Too many requests: at most {self.limiter.limit} per {self.limiter.window:g}s"
        )
        return self._json(body, 429, headers)

    @staticmethod
    def _reset_connection(request: web.BaseRequest) -> None:
        """Close with SO_LINGER 0, so the client sees a TCP RST, not a clean FIN."""
        transport = request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    # --- observation ---------------------------------------------------------
    def _admin(self, request: web.BaseRequest) -> web.Response:
        if request.path == "/__stats" and request.method == "GET":
            summary = request.query.get("summary", "") not in {"", "0", "false"}
            return self._json(self.stats(summary=summary), 200)
        if request.path == "/__reset" and request.method == "POST":
            self.reset()
            return self._json({"ok": True}, 200)
        if request.path == "/__health":
            return self._json({"ok": True, "name": self.name, "style": self.spec.style}, 200)
        return self._json({"error": f"no admin route {request.method} {request.path}"}, 404)

    def stats(self, *, summary: bool = False) -> dict[str, Any]:
        """What `/__stats` returns; docs/mocks.md describes every field."""
        by_status = Counter(str(e[4]) for e in self._log)
        by_fault = Counter(e[5] for e in self._log if e[5])
        out: dict[str, Any] = {
            "server": {
                "name": self.name,
                "style": self.spec.style,
                "url": self.url,
                "path": self.style.path,
                "products": self.spec.products,
                "seed": self.spec.seed,
                "rate_limit": self.spec.rate_limit,
                "uptime": self.clock.now() - self._started,
                "cpu_seconds": time.process_time() - self._cpu_started,
            },
            "counts": {
                "requests": len(self._log),
                "by_status": dict(by_status),
                "by_fault": dict(by_fault),
                "served_records": self._served_records,
            },
        }
        if not summary:
            out["requests"] = [dict(zip(_LOG_FIELDS, entry, strict=True)) for entry in self._log]
            out["truth"] = {
                "catalogue": self.catalogue.truth(self.style.id_of),
                "served": self.served_truth(),
            }
        return out

    def served_truth(self) -> dict[str, Any]:
        """The ids that went out in complete, well-formed 200 pages."""
        id_of, catalogue = self.style.id_of, self.catalogue
        valid: set[int] = set()
        malformed, duplicates = [], []
        index = self._served.find(1)
        while index != -1:
            slot = catalogue.slot(index)
            if slot.kind == "defect":
                malformed.append({"id": id_of(index + 1), "index": index, "defect": slot.defect})
            else:
                valid.add(slot.of + 1)
                if slot.kind == "duplicate":
                    duplicates.append({"id": id_of(slot.of + 1), "index": index, "of": slot.of})
            index = self._served.find(1, index + 1)
        return {
            "records": sum(self._served),
            "valid": [id_of(number) for number in sorted(valid)],
            "malformed": malformed,
            "duplicates": duplicates,
        }
