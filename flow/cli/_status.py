"""`flow run --status-port PORT`: the status server (flow.status) for a run,
started once its Runtime exists; aiohttp is imported only when asked for."""

from __future__ import annotations

from typing import Any

from ._output import Abort, info


async def serve_status(runtime: Any, port: int | None) -> Any:
    """The started `flow.status.StatusServer` (its URL said on stderr), or
    None without --status-port. A port that cannot be had aborts (exit 2)
    before anything is fetched."""
    if port is None:
        return None
    from ..status import StatusServer

    return await listen(StatusServer(runtime, port), port)


async def listen(server: Any, port: int) -> Any:
    """Start a status server (flow.status's, or a cluster run's) on `port`."""
    if not 0 <= port <= 65535:
        raise Abort(f"--status-port {port}: a port from 0 (any free one) to 65535")
    try:
        url = await server.start()
    except OSError as exc:
        raise Abort(f"--status-port {port}: cannot listen on 127.0.0.1: {exc.strerror or exc}") from None
    info(f"status: {url}")
    return server


# --- reaching it: flow top, flow tap ---------------------------------------------------
class Unreachable(Exception):
    """No connection to the status server (refused, reset, timed out)."""


def base_url(url: str) -> str:
    """`http://127.0.0.1:PORT` from what `flow run` printed, with or without
    a scheme, a trailing slash or /status."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    url = url.rstrip("/")
    return url.removesuffix("/status").rstrip("/")


def get(url: str, timeout: float | None = 5.0) -> Any:
    """An open response to GET `url` (a context manager; iterate it for its
    lines). Raises Unreachable without a connection; an HTTP error status
    aborts with the server's message, and the node names it lists."""
    import json
    import urllib.error
    import urllib.request

    try:
        return urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read())
        except ValueError:
            body = {}
        message = body.get("error") or f"HTTP {exc.code} {exc.reason}"
        if body.get("nodes"):
            message += "; the graph's nodes: " + ", ".join(body["nodes"])
        raise Abort(f"{url}: {message}", 1) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"cannot reach {url}: {reason} (is `flow run --status-port` running?)") from None
