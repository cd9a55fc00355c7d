"""How many pages per second one mock server answers on one core.

The server runs in its own process pinned to one CPU, faults and rate limit
off, 20 products a page; the client runs in this process pinned to the other
CPU. The client is a minimal keep-alive HTTP/1.1 loop over asyncio streams
(about 10x cheaper per request than aiohttp's client), so that the figure is
the server's, not the client's. Every style is measured; each figure is the
median of `--repeats` runs of `--seconds` each.

Reported per style:
  pages/s      wall-clock throughput seen by the client
  per core     pages per second of server CPU time (from /__stats): what one
               fully busy core gives
  vs floor     against a same-run baseline: a bare aiohttp server answering
               every request with one fixed, pre-rendered dummyjson page. It
               is the HTTP stack's own ceiling on this machine, so the ratio
               is the share of it left after generating pages; being a ratio
               within one run, it is steadier than the absolute figure on a
               shared, noisy machine.

    python bench/mocks_throughput.py [--seconds 3] [--repeats 3] [--connections 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time

GOAL = 3000.0  # pages/s of 20 products on one core
PATHS = {
    "dummyjson": "/products?limit=20&skip={offset}",
    "platzi": "/api/v1/products?offset={offset}&limit=20",
    "reqres": "/api/products?page={page}&per_page=20",
    "jsonserver": "/products?_page={page}&_limit=20",
    "cursor": "/items?limit=20",
    "baseline": "/products?limit=20&skip={offset}",
}


def pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu})


async def request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, port: int) -> bytes:
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nx-api-key: reqres-free-v1\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
    length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
    return await reader.readexactly(length)


async def measure(port: int, style: str, seconds: float, connections: int, products: int) -> int:
    pages = products // 20
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        n = k
        try:
            while time.perf_counter() < deadline:
                p = n % pages
                await request(reader, writer, PATHS[style].format(offset=p * 20, page=p + 1), port)
                done += 1
                n += connections
        finally:
            writer.close()
            await writer.wait_closed()

    await asyncio.gather(*(worker(k) for k in range(connections)))
    return done


async def stats(port: int) -> dict:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return json.loads(await request(reader, writer, "/__stats?summary=1", port))
    finally:
        writer.close()
        await writer.wait_closed()


async def reset(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST /__reset HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n".encode())
    await reader.readuntil(b"\r\n\r\n")
    writer.close()
    await writer.wait_closed()


BASELINE = """
import asyncio, os, sys, time
from aiohttp import web
from mocks import Catalogue
from mocks.styles import make_style
import msgspec
if (os.cpu_count() or 1) > 1:
    os.sched_setaffinity(0, {0})
style = make_style("dummyjson")
items = style.render_page(Catalogue(100_000), 0, 20)
BODY = msgspec.json.encode({"products": items, "total": 100_000, "skip": 0, "limit": 20})
HEADERS = {"Content-Type": "application/json; charset=utf-8"}
started = [time.process_time()]

async def handle(request):
    if request.path == "/__stats":
        stats = {"server": {"cpu_seconds": time.process_time() - started[0]}}
        return web.Response(body=msgspec.json.encode(stats), headers=HEADERS)
    if request.path == "/__reset":
        started[0] = time.process_time()
    return web.Response(body=BODY, headers=HEADERS)

async def main():
    runner = web.ServerRunner(web.Server(handle, handler_cancellation=True, access_log=None))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print("baseline http://127.0.0.1:%d" % site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def start_server(style: str, products: int) -> tuple[subprocess.Popen[str], int]:
    if style == "baseline":
        args = [sys.executable, "-c", BASELINE]
    else:
        code = (
            "import os, sys; os.sched_setaffinity(0, {0}) if (os.cpu_count() or 1) > 1 else None\n"
            "from mocks.__main__ import main; sys.exit(main())"
        )
        args = [sys.executable, "-c", code, "--style", style, "--products", str(products)]
        args += ["--rate-limit", "off", "--port", "0"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if match:
            return proc, int(match[1])
    raise RuntimeError(f"the {style} server did not start")


async def one_round(style: str, port: int, args: argparse.Namespace) -> tuple[float, float]:
    """(pages/s wall-clock, pages per server CPU second) of one timed run."""
    await reset(port)
    started = time.perf_counter()
    done = await measure(port, style, args.seconds, args.connections, args.products)
    wall = time.perf_counter() - started
    cpu = (await stats(port))["server"]["cpu_seconds"]
    return done / wall, (done / cpu if cpu > 0 else float("inf"))


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--style", action="append", choices=sorted(set(PATHS) - {"baseline"}))
    args = parser.parse_args()
    pin(1)
    styles = ["baseline", *(args.style or [s for s in PATHS if s != "baseline"])]
    servers = {style: start_server(style, args.products) for style in styles}
    results: dict[str, list[tuple[float, float]]] = {style: [] for style in styles}
    try:
        for style, (_, port) in servers.items():
            await measure(port, style, 0.5, args.connections, args.products)  # warm-up
        # Rounds interleave the servers, so that the machine's drift over the
        # run touches every style alike.
        for _ in range(args.repeats):
            for style, (_, port) in servers.items():
                results[style].append(await one_round(style, port, args))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=10)
    floor = statistics.median(r[0] for r in results["baseline"])
    print(
        f"{'style':<11} {'pages/s':>9} {'min':>7} {'max':>7} {'per core':>9} {'vs floor':>9} {'vs goal':>8}"
        f"   (median of {args.repeats} x {args.seconds:g}s, {args.connections} connections)"
    )
    worst = float("inf")
    for style in styles:
        rates = [r[0] for r in results[style]]
        rate, per_core = statistics.median(rates), statistics.median(r[1] for r in results[style])
        if style != "baseline":
            worst = min(worst, rate)
        print(
            f"{style:<11} {rate:>9.0f} {min(rates):>7.0f} {max(rates):>7.0f} {per_core:>9.0f}"
            f" {rate / floor:>8.2f}x {rate / GOAL:>7.2f}x"
        )
    print(f"slowest style: {worst:.0f} pages/s (median) = {worst / GOAL:.2f}x the {GOAL:.0f} pages/s goal")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
