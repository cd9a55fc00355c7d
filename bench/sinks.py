"""What flow's sinks cost against writing the same rows with the driver
directly: products/s and peak RSS of `sqlite`, `parquet`, `csv` and `jsonl`.

Both sides write the same products, made the same way in the same process:
batches of 100 (a page) of generated products, `--sizes` of them (default
10,000 and 1,000,000).

- flow: a graph of one node, a bench-only source stage that makes the
  batches, then the sink (`flow.testing.run_graph`: the real runtime, with
  its buffers, ledger and per-stage statistics; telemetry off).
- direct: a plain loop making the same batches and writing them as the sink
  would, with the driver and nothing else: sqlite3 with the same pragmas (WAL,
  synchronous=NORMAL), the same table and upsert, a transaction per batch;
  asyncpg with the same COPY into a staging table and INSERT per batch, on
  a PostgreSQL server the benchmark starts (tests/postgres_server.py: unix
  socket, fsync off, a fresh database per run);
  pyarrow's ParquetWriter with the same schema, row groups and compression;
  csv.writer; msgspec-encoded JSON lines.

Each run is its own process (peak RSS is ru_maxrss from wait4); sides and
sinks are interleaved, `--repeats` times at each size. Products/s counts
the writing only, timed inside the process from the first product made to
the file or table complete: interpreter start-up and imports (flow's engine
takes ~0.2 s more than a bare driver) are not the sink's work. Printed per
sink and size: median (min..max) products/s of both, the ratio flow /
direct (the median of the pairs' ratios) and flow's peak RSS. Goals: ratio >= 0.8 at
the largest size; flow's peak RSS at the largest size <= 1.5x that at the
smallest.

    python bench/sinks.py [--sizes 10000 1000000] [--repeats 3] [--sinks sqlite postgres parquet csv jsonl]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from throughput import ROOT, run_measured, spread  # shared tools

from tests.postgres_server import PostgresServer  # a server of its own for the postgres sink

SINKS = ("sqlite", "postgres", "parquet", "csv", "jsonl")
BATCH = 100
RATIO_GOAL, RSS_GOAL = 0.8, 1.5


def batches(count: int) -> Iterator[Any]:
    """`count` products in ProductBatches of BATCH, the same on both sides."""
    from stages.records.items import Product, ProductBatch

    for start in range(0, count, BATCH):
        products = [
            Product(
                id=f"s:{n}",
                source_id=str(n),
                title=f"Lamp {n}",
                source="s",
                price=(n % 9973) / 10,
                currency="USD",
                category=f"c{n % 17}",
                processed_at="2026-11-26T10:00:00.000Z",
                quality=1.0 - (n % 5) / 10,
                extra={"brand": "b"} if n % 4 == 0 else {},
            )
            for n in range(start, min(start + BATCH, count))
        ]
        yield ProductBatch("s", start // BATCH, products)


# --- the flow side --------------------------------------------------------------
def with_flow(sink: str, count: int, out: Path) -> int:
    from flow.registry import Params, stage
    from flow.testing import run_graph
    from stages.records.items import ProductBatch

    class MadeParams(Params):
        count: int  # products to make

    @stage("made", MadeParams, consumes=None, produces=ProductBatch)
    async def made(source: None, params: MadeParams, ctx: Any) -> Any:
        """The bench's products, in batches."""
        for batch in batches(params.count):
            yield batch

    target = f'{{postgres: {{dsn: "{os.environ["FLOW_BENCH_DSN"]}"}}}}' if sink == "postgres" else sink
    made_count = f"{{made: {{count: {count}}}}}"
    graph = f"version: 1\nrun: {{deadline: 30m}}\nnodes:\n  s: {{pipe: [{made_count}, {target}]}}\n"
    result = run_graph(graph, kinds=[made], out_dir=out)
    assert result.status == "completed" and not result.errors and not result.lost, (
        result.errors,
        result.lost,
    )
    return int(result.ledger["s"]["records"]["written"]["s"])


# --- the direct side ------------------------------------------------------------
def direct_sqlite(count: int, out: Path) -> int:
    import sqlite3

    import msgspec

    from stages.records.sqlite import FIELDS

    db = sqlite3.connect(out / "products.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    columns = ", ".join(f"{n} {t}{' PRIMARY KEY' if n == 'id' else ''}" for n, t, _ in FIELDS)
    db.execute(f"CREATE TABLE products (run_id TEXT, {columns})")
    names = ["run_id", *(n for n, _, _ in FIELDS)]
    updates = ", ".join(f"{c} = excluded.{c}" for c in names if c != "id")
    insert = (f"INSERT INTO products ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
              f" ON CONFLICT(id) DO UPDATE SET {updates}")  # fmt: skip
    encode, json_columns, astuple = msgspec.json.encode, [j for _, _, j in FIELDS], msgspec.structs.astuple
    written = 0
    for batch in batches(count):
        rows = [
            ("r", *(encode(v).decode() if j else v for v, j in zip(astuple(p), json_columns, strict=True)))
            for p in batch.products
        ]
        db.execute("BEGIN IMMEDIATE")  # as the sink: it takes the write lock first
        db.executemany(insert, rows)
        db.execute("COMMIT")
        written += len(rows)
    db.close()
    return written


def direct_postgres(count: int, out: Path) -> int:
    """asyncpg as the sink uses it: per batch, in a transaction, COPY into a
    temporary table and one INSERT ... ON CONFLICT into the products table."""
    import asyncio

    import asyncpg
    import msgspec

    from stages.records.postgres import COLUMNS, _instant

    names = ["run_id", *(n for n, _ in COLUMNS)]
    typed = ", ".join(f"{n} {t}{' NOT NULL PRIMARY KEY' if n == 'id' else ''}" for n, t in COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in names if c != "id")
    columns = ", ".join(names)
    insert = (f"INSERT INTO products ({columns}) SELECT DISTINCT ON (id) {columns} FROM staging"
              f" ORDER BY id, seq DESC ON CONFLICT (id) DO UPDATE SET {updates}")  # fmt: skip

    async def main() -> int:
        db = await asyncpg.connect(os.environ["FLOW_BENCH_DSN"])
        await db.execute(f"CREATE TABLE products (run_id TEXT, {typed})")
        await db.execute("CREATE TEMP TABLE staging (seq BIGINT, LIKE products) ON COMMIT DELETE ROWS")
        written = 0
        for batch in batches(count):
            rows = []
            for seq, product in enumerate(batch.products):
                values = list(msgspec.structs.astuple(product))
                values[-4], values[-1] = _instant(values[-4]), msgspec.json.encode(values[-1]).decode()
                rows.append((seq, "r", *values))
            async with db.transaction():
                await db.copy_records_to_table("staging", records=rows, columns=["seq", *names])
                await db.execute(insert)
            written += len(rows)
        await db.close()
        return written

    return asyncio.run(main())


def direct_parquet(count: int, out: Path) -> int:
    import msgspec
    import pyarrow.parquet as pq

    from stages.records.parquet import ParquetParams, schema, table

    params = ParquetParams()
    shape = schema()
    writer = pq.ParquetWriter(out / "products.parquet", shape, compression=params.compression)
    rows: list[tuple[Any, ...]] = []
    written = 0
    for batch in batches(count):
        rows.extend(map(msgspec.structs.astuple, batch.products))
        if len(rows) >= params.row_group:
            writer.write_table(table(rows, shape))
            written, rows = written + len(rows), []
    if rows:
        writer.write_table(table(rows, shape))
        written += len(rows)
    writer.close()
    return written


def direct_csv(count: int, out: Path) -> int:
    import csv

    import msgspec

    from stages.records.csv import COLUMNS

    written = 0
    with (out / "products.csv").open("w", encoding="utf-8", newline="") as file:
        rows = csv.writer(file)
        rows.writerow(COLUMNS)
        encode, astuple = msgspec.json.encode, msgspec.structs.astuple
        for batch in batches(count):
            rows.writerows(
                [encode(v).decode() if c == "extra" else v for c, v in zip(COLUMNS, astuple(p), strict=True)]
                for p in batch.products
            )
            written += len(batch.products)
    return written


def direct_jsonl(count: int, out: Path) -> int:
    import msgspec

    encode = msgspec.json.Encoder().encode_into
    buffer = bytearray()
    written = 0
    with (out / "products.jsonl").open("wb") as file:
        for batch in batches(count):
            buffer.clear()
            for product in batch.products:
                encode(product, buffer, -1)
                buffer += b"\n"
            file.write(buffer)
            written += len(batch.products)
    return written


DIRECT = {"sqlite": direct_sqlite, "postgres": direct_postgres, "parquet": direct_parquet, "csv": direct_csv,
          "jsonl": direct_jsonl}  # fmt: skip


def child(side: str, sink: str, count: int) -> None:
    """One measured run, in its own process: prints the rows written and
    the seconds the writing took (from the first product made to the file
    or table complete: the interpreter's start and the imports, which
    differ between the sides and are not the sink's work, left out)."""
    import importlib

    # Modules loaded before the clock starts: the products' on both sides,
    # the engine's and the sink's on flow's side (a process's imports are
    # bench/throughput.py's and the start-up figures' business, not this one's).
    modules = ["stages.records.items"]
    if side == "flow":
        sink_module = "stages.records.sqlite" if sink == "sqlite" else f"stages.records.{sink}"
        modules += ["flow.testing", "flow.runtime", "flow.spec", "flow.graph", sink_module]
    for module in modules:
        importlib.import_module(module)

    with tempfile.TemporaryDirectory(prefix="flow-bench-sinks-") as tmp:
        started = time.perf_counter()
        written = with_flow(sink, count, Path(tmp)) if side == "flow" else DIRECT[sink](count, Path(tmp))
        seconds = time.perf_counter() - started
    assert written == count, f"{side} {sink}: {written} of {count} written"
    print(json.dumps({"written": written, "seconds": seconds}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sinks", nargs="+", choices=SINKS, default=list(SINKS))
    parser.add_argument("--child", nargs=3, metavar=("SIDE", "SINK", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return 0
    started = time.monotonic()
    runs: dict[tuple[str, int, str], list[Any]] = {}
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(PostgresServer()) if "postgres" in args.sinks else None
        code = measure(args, runs, server)
        if code:
            return code
    report(args, runs, started)
    return 0 if all_met(args, runs) else 1


def measure(args: Any, runs: dict[tuple[str, int, str], list[Any]], server: Any) -> int:
    """Every run, sides and sinks interleaved; 1 if one failed."""
    for repeat in range(args.repeats):
        for size in args.sizes:
            for sink in args.sinks:
                sides = ("flow", "direct") if repeat % 2 == 0 else ("direct", "flow")  # alternate the order
                for side in sides:
                    command = [sys.executable, __file__, "--child", side, sink, str(size)]
                    env = (
                        {**os.environ, "FLOW_BENCH_DSN": fresh_database(server)}
                        if sink == "postgres"
                        else None
                    )
                    measured = run_measured(command, timeout=1800, cwd=ROOT, env=env)
                    if measured.code != 0:
                        print(f"{side} {sink} {size:,}: exit {measured.code}\n{measured.output}")
                        return 1
                    measured.work = json.loads(measured.output.strip().splitlines()[-1])["seconds"]
                    runs.setdefault((sink, size, side), []).append(measured)
    return 0


def fresh_database(server: Any) -> str:
    """A new, empty database on the bench's server: its DSN."""
    import asyncio

    import asyncpg

    name = f"bench_{time.monotonic_ns()}"

    async def create() -> None:
        connection = await asyncpg.connect(server.dsn)
        try:
            await connection.execute(f"CREATE DATABASE {name}")
        finally:
            await connection.close()

    asyncio.run(create())
    return server.dsn.replace("postgresql:///postgres", f"postgresql:///{name}")


def goal(args: Any, runs: dict[tuple[str, int, str], list[Any]], sink: str) -> tuple[float, float]:
    """(flow / direct at the largest size, flow's peak RSS largest / smallest)."""
    largest, smallest = max(args.sizes), min(args.sizes)
    pairs = zip(runs[(sink, largest, "flow")], runs[(sink, largest, "direct")], strict=True)
    ratio = statistics.median(d.work / f.work for f, d in pairs)
    rss = statistics.median(r.max_rss_mb for r in runs[(sink, largest, "flow")]) / statistics.median(
        r.max_rss_mb for r in runs[(sink, smallest, "flow")]
    )
    return ratio, rss


def all_met(args: Any, runs: dict[tuple[str, int, str], list[Any]]) -> bool:
    return all(
        ratio >= RATIO_GOAL and rss <= RSS_GOAL for ratio, rss in (goal(args, runs, s) for s in args.sinks)
    )


def report(args: Any, runs: dict[tuple[str, int, str], list[Any]], started: float) -> None:
    print(
        f"products in batches of {BATCH}; {args.repeats} run(s) of each side, sink and size, each a process"
    )
    for sink in args.sinks:
        for size in args.sizes:
            flow, direct = runs[(sink, size, "flow")], runs[(sink, size, "direct")]
            ratios = [d.work / f.work for f, d in zip(flow, direct, strict=True)]
            print(
                f"{sink:8} {size:>10,}: flow {spread([size / r.work for r in flow])} products/s, "
                f"direct {spread([size / r.work for r in direct])}; flow / direct "
                f"{statistics.median(ratios):.2f} ({min(ratios):.2f}..{max(ratios):.2f}); "
                f"peak RSS flow {spread([r.max_rss_mb for r in flow], '.1f')} MB, "
                f"direct {spread([r.max_rss_mb for r in direct], '.1f')} MB"
            )
        ratio, rss = goal(args, runs, sink)
        met = ratio >= RATIO_GOAL and rss <= RSS_GOAL
        print(
            f"{sink:8} goal: flow / direct {ratio:.2f} >= {RATIO_GOAL} at {max(args.sizes):,}; peak RSS "
            f"{max(args.sizes):,} / {min(args.sizes):,} = {rss:.2f}x <= {RSS_GOAL}x: "
            + ("met" if met else "NOT met")
        )
    print(f"the benchmark took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
