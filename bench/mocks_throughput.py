"""How many pages per second one mock server answers on one core.

The server runs in its own process pinned to one CPU, faults and rate limit
off, 20 products a page; the client runs in this process pinned to the other
CPU. The client is a minimal keep-alive HTTP/1.1 loop over asyncio streams
(about 10x cheaper per request than aiohttp's client), so that the figure is
the server's, not the client's. Every style is measured; each figure is the
median of `--repeats` runs of `--seconds` each.

Reported per style:
  pages/s      wall-clock throughput seen by the client
  server CPU   server process CPU time per page (from /__stats), and the
               pages/s one fully busy core would give (1 / CPU per page)

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


def start_server(style: str, products: int) -> tuple[subprocess.Popen[str], int]:
    code = (
        "import os, sys; os.sched_setaffinity(0, {0}) if (os.cpu_count() or 1) > 1 else None\n"
        "from mocks.__main__ import main; sys.exit(main())"
    )
    args = [
        sys.executable,
        "-c",
        code,
        "--style",
        style,
        "--products",
        str(products),
        "--rate-limit",
        "off",
        "--port",
        "0",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if match:
            return proc, int(match[1])
    raise RuntimeError(f"the {style} server did not start")


async def bench_style(style: str, args: argparse.Namespace) -> tuple[float, float]:
    proc, port = start_server(style, args.products)
    try:
        await measure(port, style, 0.5, args.connections, args.products)  # warm-up
        rates, cpu_rates = [], []
        for _ in range(args.repeats):
            await reset(port)
            started = time.perf_counter()
            done = await measure(port, style, args.seconds, args.connections, args.products)
            wall = time.perf_counter() - started
            cpu = (await stats(port))["server"]["cpu_seconds"]
            rates.append(done / wall)
            cpu_rates.append(done / cpu if cpu > 0 else float("inf"))
        return statistics.median(rates), statistics.median(cpu_rates)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--style", action="append", choices=sorted(PATHS))
    args = parser.parse_args()
    pin(1)
    print(
        f"{'style':<11} {'pages/s':>9} {'per core':>9} {'vs goal':>8}   "
        f"(median of {args.repeats} x {args.seconds:g}s, {args.connections} connections)"
    )
    worst = float("inf")
    for style in args.style or list(PATHS):
        rate, per_core = await bench_style(style, args)
        worst = min(worst, rate)
        print(f"{style:<11} {rate:>9.0f} {per_core:>9.0f} {rate / GOAL:>7.2f}x")
    print(f"slowest style: {worst:.0f} pages/s wall-clock = {worst / GOAL:.2f}x the {GOAL:.0f} goal")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
