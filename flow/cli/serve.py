"""`flow serve GRAPH`: run a graph as a long-running service.

The graph's stages serve HTTP through one server (flow.serving): a `jobs`
source takes jobs (POST /jobs, GET /jobs/{id}), asynchronous vendors call
back (POST /vendor-webhook/{vendor}), and `GET /health` shows the graph.
It runs until SIGINT or SIGTERM: then the intake answers 503, what is in
flight drains within `run.grace`, the rest stays pending in the job store
for the next start, `OUT/serve.json` (the run report) is written, and the
exit code is 0 (a second signal cancels at once: 130). `run.deadline` does
not apply: a service runs until it is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from ._load import add_graph_arguments, load_checked
from ._output import info
from ._signals import PRESSES, on_signals, stopper

SERVICE_DEADLINE = 10 * 365 * 86400.0  # "until stopped": the runtime's deadline, ten years away


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_graph_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any free port)")
    parser.add_argument("--out", metavar="DIR", help="output directory (default: run.out of the graph)")
    parser.add_argument(
        "--public-url",
        metavar="URL",
        help="the service's URL as others reach it, for callbacks (default: http://HOST:PORT; "
        "a wildcard HOST is reached as 127.0.0.1)",
    )
    parser.add_argument("-q", "--quiet", action="count", default=0, help="only errors")


def run(args: argparse.Namespace) -> int:
    from .run import write_json_atomically

    spec = load_checked(args)
    out_dir = Path(args.out or spec.run.out)
    try:
        result = asyncio.run(_serve(args, spec, out_dir))
    except CannotListen as exc:
        info(f"flow: error: cannot listen on {args.host}:{args.port}: {exc}")
        return 2
    write_json_atomically(out_dir / "serve.json", result.report())
    if not PRESSES.count:  # nobody stopped it: the graph ended on its own, which a service must not
        info(f"flow serve: the service ended by itself; report: {out_dir / 'serve.json'}")
        for error in result.errors[:5]:
            info(f"  {error['node']}/{error['stage']}: {error['error']}: {error['detail']}")
        return 1
    if not args.quiet:
        info(f"flow serve: stopped; report: {out_dir / 'serve.json'}")
    return 130 if PRESSES.count > 1 else 0


class CannotListen(Exception):
    pass


def public_url(host: str, port: int) -> str:
    """How callbacks reach a service listening on host:port."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _serve(args: argparse.Namespace, spec: Any, out_dir: Path) -> Any:
    from ..runtime import Runtime
    from ..serving import Routes, ServiceServer
    from .run import _no_mocks

    if spec.mocks:
        from mocks import serve
    else:
        serve = _no_mocks
    async with serve(spec.mocks) as servers:
        if servers:
            spec = load_checked(args, refs={name: s.url for name, s in servers.items()})
        runtime = Runtime(spec, out_dir=out_dir)
        runtime.deadline = SERVICE_DEADLINE
        routes = Routes()
        runtime.resources.routes = routes
        server = ServiceServer(runtime, routes, args.host, args.port)
        try:
            await server.start()
        except OSError as exc:  # the port is taken, or the address is not this machine's
            raise CannotListen(exc.strerror or str(exc)) from None
        runtime.resources.service_url = args.public_url or public_url(args.host, server.port)
        if not args.quiet:
            runtime.resources.announce = info
            info(f"serving: {server.url} (GET /health; Ctrl-C stops)")
        try:
            with on_signals(stopper(runtime)):
                return await runtime.run()
        finally:
            await server.close()
