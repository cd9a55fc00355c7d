"""The status server of a running graph (`flow run --status-port PORT`).

    GET /             what is served here, and the node names
    GET /status       the run as of now (JSON, `Status` below)
    GET /tap/NODE     up to `limit` items passing out of NODE's main output
                      (?limit=N, default 10, at most 1000), one JSON object
                      per line as they pass (chunked NDJSON); unknown node: 404

It runs inside the run's event loop, on 127.0.0.1 only (a tap shows the
records themselves: never on another interface), and reads the runtime's
live state without locks: every handler runs on the loop between two steps
of the graph, so what it reads is consistent per step. It is started once
the Runtime exists and closed when the run has ended.

A status is a walk over the nodes, their buffers and the run's gauges
(about 0.15 ms, JSON included, for the default graph's eight nodes; 1 ms a
request over loopback): errors and events are scanned incrementally, each
once, so polling stays cheap however long the run. A tap costs the graph
one truth test per item while no one taps (flow.tap); a tap's client that
reads slower than items pass loses items, counted in the node's
`taps.dropped`; the graph never waits for it.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import msgspec
from aiohttp import web

from .tap import Tap

TAP_DEFAULT, TAP_MAX = 10, 1000
SHUTDOWN = 1.0  # seconds a tap's client has, at the end of the run, to take what is held
SEND_BUFFER = 64 * 1024  # bytes the kernel holds for a tap's client (flow.tap.ROOM items are held besides)


class StageStatus(msgspec.Struct):
    stage: str
    items_in: int | None  # None for a source stage (it has no input)
    items_out: int
    errors: int  # times the stage raised


class Edge(msgspec.Struct):
    """A buffer between two nodes: `to` reads it, the port is the writer's
    (None: its main output)."""

    to: str
    port: str | None
    fill: int
    capacity: int
    producers_waiting: int


class Endpoint(msgspec.Struct):
    breaker: str  # closed | open | half_open
    rate_limit: float | None  # requests per second the limiter allows (None: not limited)
    requests: int  # attempts that went on the wire (retries and probes included)
    requests_last_second: int  # in the last whole second of the run
    throttled: int  # answered 429


class TapTotals(msgspec.Struct):
    attached: int
    delivered: int
    dropped: int  # passed while a tap's client was behind


class NodeStatus(msgspec.Struct):
    stages: list[StageStatus]
    items_out: int  # out of its last stage
    errors: int  # error records naming the node
    dead_letters: int
    dropped: int  # input items dropped after the node's branch failed
    finished: bool
    input: Edge | None  # the buffer the node reads
    outputs: list[Edge]  # the buffers it writes into, main output first
    counters: dict[str, int]  # pages, records, products, retry, ... (flow.ledger's names)
    endpoints: dict[str, Endpoint]
    taps: TapTotals


class Status(msgspec.Struct):
    run_id: str
    graph: str
    state: str  # running | stopping | ended
    stopped: str | None  # why it was stopped (interrupted, deadline)
    elapsed: float  # seconds since the run started
    nodes: dict[str, NodeStatus]
    endpoints: dict[str, Endpoint]


class View:
    """Reads a `flow.runtime.Runtime` into a `Status`. Errors and events
    are append-only lists: each is read once, from where the last read stopped."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.ended = False
        self._errors_read = self._events_read = 0
        self._errors: dict[str, int] = {}  # node -> error records naming it
        self._breakers: dict[str, str] = {}  # endpoint -> its breaker's last state
        self._owners: dict[str, str] = {}  # endpoint -> the node whose fetch reported on it

    def _catch_up(self) -> None:
        run = self.runtime.resources
        for error in run.errors[self._errors_read :]:
            if error.get("node"):
                self._errors[error["node"]] = self._errors.get(error["node"], 0) + 1
        self._errors_read = len(run.errors)
        for event in run.events[self._events_read :]:
            if event.get("event") == "breaker" and event.get("endpoint"):
                self._breakers[event["endpoint"]] = str(event.get("new"))
                self._owners.setdefault(event["endpoint"], event["node"])
        self._events_read = len(run.events)

    def status(self) -> Status:
        self._catch_up()
        runtime = self.runtime
        run = runtime.resources
        now = asyncio.get_running_loop().time()
        elapsed = 0.0 if run.started_at is None else now - run.started_at
        state = "ended" if self.ended else "stopping" if run.stopping.is_set() else "running"
        endpoints = self._endpoints(int(elapsed))
        nodes = {name: self._node(node, endpoints) for name, node in runtime.nodes.items()}
        return Status(run.run_id, run.graph, state, run.stopped, round(elapsed, 3), nodes, endpoints)

    def _endpoints(self, second: int) -> dict[str, Endpoint]:
        """Every endpoint a limiter, a breaker or the request timeline knows."""
        run = self.runtime.resources
        limits = {attrs.get("flow.endpoint"): v for (name, attrs), v in _gauges(run, "flow.rate_limit")}
        breakers = {attrs.get("flow.endpoint") for (_, attrs), _ in _gauges(run, "flow.breaker.state")}
        names = {key for series, key in run.timeline if series == "requests"}
        out = {}
        for name in sorted(n for n in names | breakers | set(limits) if isinstance(n, str)):
            requests = run.timeline.get(("requests", name), [])
            last = requests[second - 1] if 0 < second <= len(requests) else 0
            throttled = sum(run.timeline.get(("throttled", name), ()))
            breaker = self._breakers.get(name, "closed")
            out[name] = Endpoint(breaker, limits.get(name), sum(requests), last, throttled)
        return out

    def _node(self, node: Any, endpoints: dict[str, Endpoint]) -> NodeStatus:
        runtime, name = self.runtime, node.name
        stats = runtime.stats[name]
        stages = [
            StageStatus(s.stage, runtime.taken(node, i), s.items_out, s.errors)
            for i, s in enumerate(stats.stages)
        ]
        buffer = runtime.buffers.get(name)
        counters = dict(runtime.resources.counters.get(name, {}))
        outputs = [
            _edge(reader, port, runtime.buffers[reader])
            for (source, port), readers in sorted(runtime.readers.items(), key=_main_first)
            if source == name
            for reader in readers
        ]
        taps = runtime.taps[name]
        mine = {e: v for e, v in endpoints.items() if self._owners.get(e, e) == name}
        return NodeStatus(
            stages,
            stats.stages[-1].items_out,
            self._errors.get(name, 0),
            counters.get("dead_letters", 0),
            stats.dropped,
            taps.ended,
            None if buffer is None else _edge(name, None, buffer),
            outputs,
            counters,
            mine,
            TapTotals(*taps.totals()),
        )


def _gauges(run: Any, gauge: str) -> list[tuple[tuple[str, dict[str, Any]], float]]:
    return [((name, dict(attrs)), value) for (name, attrs), value in run.gauges.items() if name == gauge]


def _main_first(entry: tuple[tuple[str, str | None], list[str]]) -> tuple[bool, str]:
    (_, port), _ = entry
    return port is not None, port or ""


def _edge(reader: str, port: str | None, buffer: Any) -> Edge:
    s = buffer.statistics()
    return Edge(reader, port, s.fill, s.capacity, s.producers_waiting)


def _unencodable(value: Any) -> Any:
    """What msgspec cannot encode (a limiter on a request, a response) is shown by its repr."""
    return repr(value)


async def on_loopback(runner: web.AppRunner, port: int) -> int:
    """Set `runner` up listening on 127.0.0.1:`port` only; the port it got
    (the system's choice for 0). Nothing is left open if it cannot listen."""
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
    except OSError:
        await runner.cleanup()
        raise
    return int(runner.addresses[0][1])


class StatusServer:
    """`start()` once the Runtime exists, `close()` when its run has ended."""

    def __init__(self, runtime: Any, port: int = 0) -> None:
        self.view = View(runtime)
        self.runtime, self.port = runtime, port
        self._status = msgspec.json.Encoder()
        self._items = msgspec.json.Encoder(enc_hook=_unencodable)
        self._runner: web.AppRunner | None = None
        self._streams: dict[asyncio.Task[Any], Any] = {}  # tap handlers streaming now -> their transports

    async def start(self) -> str:
        """Listen on 127.0.0.1; the URL, with the port the system gave for 0."""
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/status", self._serve_status)
        app.router.add_get("/tap/{node}", self._tap)
        # handler_cancellation: a client that goes away detaches its tap at once.
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN, handler_cancellation=True
        )
        self.port = await on_loopback(runner, self.port)
        self._runner = runner
        return f"http://127.0.0.1:{self.port}/"

    async def close(self) -> None:
        """The run has ended: `state` says so, every tap ends once its client
        took what it holds (or after SHUTDOWN seconds), the port is closed."""
        self.view.ended = True
        for taps in self.runtime.taps.values():
            taps.end()
        if self._streams:
            await asyncio.wait(set(self._streams), timeout=SHUTDOWN)
        # A client that still has not read what it was sent would hold its
        # connection (and the transport's unsent bytes) open: cut it off.
        for transport in list(self._streams.values()):
            transport.abort()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def _json(self, data: Any, status: int = 200) -> web.Response:
        return web.Response(body=self._status.encode(data), status=status, content_type="application/json")

    async def _index(self, request: web.Request) -> web.Response:
        nodes = list(self.runtime.nodes)
        return self._json({"status": "/status", "tap": "/tap/NODE?limit=N", "nodes": nodes})

    async def _serve_status(self, request: web.Request) -> web.Response:
        return self._json(self.view.status())

    async def _tap(self, request: web.Request) -> web.StreamResponse:
        node = request.match_info["node"]
        taps = self.runtime.taps.get(node)
        if taps is None:
            nodes = list(self.runtime.nodes)
            return self._json({"error": f"no node '{node}' in the graph", "nodes": nodes}, 404)
        try:
            limit = int(request.query.get("limit", TAP_DEFAULT))
        except ValueError:
            limit = 0
        if not 1 <= limit <= TAP_MAX:
            return self._json({"error": f"limit: a whole number from 1 to {TAP_MAX}"}, 400)
        tap = taps.attach(limit)
        task = asyncio.current_task()
        assert task is not None
        self._streams[task] = request.transport
        try:
            return await self._stream(request, tap)
        finally:
            del self._streams[task]
            taps.detach(tap)

    async def _stream(self, request: web.Request, tap: Tap) -> web.StreamResponse:
        # What a slow client has not read stays bounded: the kernel's send
        # buffer is kept small (it grows to megabytes on its own), so the tap
        # shows it is behind, and drops, soon instead of after megabytes.
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        encode = self._items.encode
        try:
            while items := await tap.take():
                # What piled up while the last write waited goes out in one write.
                await response.write(b"".join(encode(item) + b"\n" for item in items))
            await response.write_eof()
        except ConnectionError:  # the client went away, or was cut off at the end of the run
            pass
        return response
