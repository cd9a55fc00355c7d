"""The status server of a cluster run (`flow run --cluster ... --status-port PORT`).

    GET /          what is served here, and the node names
    GET /status    the run as of now, in flow.status's shape (so `flow top`
                   shows it): every shard's nodes, named `shard-I/NODE`, and
                   their endpoints, from the newest status each shard sent
                   through its channel (flow.relay: one a second, never
                   waiting for room)
    GET /tap/NODE  404: a shard's items stay in its process

Like flow.status, it listens on 127.0.0.1 only and runs in the driver's
event loop, reading the spools' newest statuses between two pulls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

from .status import on_loopback


def merged(spools: list[Any], shards: list[int], run_id: str, graph: str, state: str) -> dict[str, Any]:
    """One status from the shards' newest: nodes prefixed by their shard."""
    nodes: dict[str, Any] = {}
    endpoints: dict[str, Any] = {}
    elapsed, stopped = 0.0, None
    for shard, spool in zip(shards, spools, strict=True):
        status = spool.status
        if status is None:  # not started yet
            continue
        nodes.update({f"shard-{shard}/{name}": node for name, node in status["nodes"].items()})
        endpoints.update(status["endpoints"])
        elapsed, stopped = max(elapsed, status["elapsed"]), stopped or status["stopped"]
        if status["state"] == "stopping" and state == "running":
            state = "stopping"
    return {"run_id": run_id, "graph": graph, "state": state, "stopped": stopped, "elapsed": elapsed,
            "nodes": nodes, "endpoints": endpoints}  # fmt: skip


class ClusterStatusServer:
    """`start()` once the shards are placed, `close()` when they have ended."""

    def __init__(self, merging: Callable[[str], dict[str, Any]], port: int = 0) -> None:
        """`merging(state)`: the shards' newest statuses as one (`merged`)."""
        self.merging, self.port = merging, port
        self.state = "running"
        self._encode = msgspec.json.Encoder().encode
        self._runner: web.AppRunner | None = None

    def status(self) -> dict[str, Any]:
        return self.merging(self.state)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/status", self._status)
        app.router.add_get("/tap/{node}", self._tap)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self.port = await on_loopback(runner, self.port)
        self._runner = runner
        return f"http://127.0.0.1:{self.port}/"

    async def close(self) -> None:
        self.state = "ended"
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def _json(self, data: Any, status: int = 200) -> web.Response:
        return web.Response(body=self._encode(data), status=status, content_type="application/json")

    async def _index(self, request: web.Request) -> web.Response:
        return self._json({"status": "/status", "nodes": list(self.status()["nodes"])})

    async def _status(self, request: web.Request) -> web.Response:
        return self._json(self.status())

    async def _tap(self, request: web.Request) -> web.Response:
        error = "a cluster run serves no taps: a shard's items stay in its process"
        return self._json({"error": error, "nodes": list(self.status()["nodes"])}, 404)
