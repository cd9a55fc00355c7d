"""A mock server's memory does not grow with its catalogue.

For catalogues of 1,000 and 1,000,000 products (faults and limits off), one
server process each: its RSS after start, and after serving `--pages` pages of
20 products spread over the whole catalogue. Pages are generated on demand,
so the million-product server should cost what the small one costs plus its
1-byte-per-product served bitmap (1 MB) and the request log (both reset by
POST /__reset).

    python bench/mocks_memory.py [--pages 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import mocks_throughput as mt  # the same server launcher and client


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def measure(products: int, pages: int) -> tuple[float, float]:
    proc, port = mt.start_server("dummyjson", products)
    try:
        await asyncio.sleep(0.3)
        started = rss_mb(proc.pid)
        step = max(1, products // 20 // pages)

        async def walk(k: int) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                for n in range(k, pages, 8):
                    skip = (n * step * 20) % products
                    await mt.request(reader, writer, f"/products?limit=20&skip={skip}", port)
            finally:
                writer.close()
                await writer.wait_closed()

        await asyncio.gather(*(walk(k) for k in range(8)))
        return started, rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=5000)
    args = parser.parse_args()
    rows = {size: await measure(size, args.pages) for size in (1_000, 1_000_000)}
    print(f"{'products':>10} {'RSS at start':>13} {'after pages':>12}   ({args.pages} pages of 20 served)")
    for size, (start, after) in rows.items():
        print(f"{size:>10,} {start:>10.1f} MB {after:>9.1f} MB")
    small, large = rows[1_000][1], rows[1_000_000][1]
    print(f"1,000,000 vs 1,000 products after serving: {large / small:.2f}x RSS (+{large - small:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
