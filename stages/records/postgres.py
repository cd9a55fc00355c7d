"""`postgres`: the `sqlite` sink's contract on a PostgreSQL server.

Products go in one transaction per batch: COPY into a temporary staging
table, then one `INSERT ... SELECT` into the products table (mode: upsert,
`ON CONFLICT (id) DO UPDATE`, the batch's last copy of an id winning; mode:
append, every row). Dead letters, errors and windows go to their tables
and the run to `runs`, one row per run and sink, completed by the engine
when the run ends (`ctx.at_run_end`), as in `sqlite`. Columns are typed
from the Product record: TEXT, DOUBLE PRECISION, `processed_at` TIMESTAMPTZ,
`extra` (and every JSON column) JSONB.

asyncpg is an optional extra (`pip install 'flow[postgres]'`); the driver
is asynchronous, so writes never hold up the event loop. `dsn` takes the
libpq forms (`postgresql://user@host/db`, `postgresql:///db?host=/run/...`),
with `${ENV}` for secrets (the report shows `${NAME}`, never the value).
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from flow.items import DeadLetter, ErrorRecord
from flow.registry import Params, stage

from .items import Product, ProductBatch
from .sqlite import SIDE, check_table_name
from .windows import WindowStats

_TYPES = {str: "TEXT", float: "DOUBLE PRECISION", int: "BIGINT", bool: "BOOLEAN"}
COLUMNS = [
    (f.name, "TIMESTAMPTZ" if f.name == "processed_at" else _TYPES.get(f.type, "JSONB"))
    for f in msgspec.structs.fields(Product)
]
_SIDE_TYPES = {"page": "BIGINT", "position": "BIGINT", "item": "BIGINT", "start": "DOUBLE PRECISION",
               "end": "DOUBLE PRECISION", "count": "BIGINT", "raw": "JSONB", "fields": "JSONB",
               "stats": "JSONB"}  # fmt: skip
RUNS = (
    "CREATE TABLE IF NOT EXISTS runs (run_id TEXT, node TEXT, graph TEXT, status TEXT, sink TEXT,"
    " started_at TEXT, finished_at TEXT, products BIGINT, dead_letters BIGINT, errors BIGINT,"
    " lost JSONB, ledger JSONB, PRIMARY KEY (run_id, node))"
)
_encode = msgspec.json.Encoder().encode


class PostgresParams(Params):
    dsn: str  # e.g. postgresql://flow@localhost/flow or "${DATABASE_URL}"
    mode: Literal["upsert", "append"] = "upsert"  # upsert: one row per product id; append: a row per write
    table: str = "products"  # the products table's name

    def __post_init__(self) -> None:
        if importlib.util.find_spec("asyncpg") is None:
            raise ValueError("postgres needs asyncpg: pip install 'flow[postgres]'")
        check_table_name(self.table)


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Server:
    """The sink's connection and statements (identifiers quoted)."""

    def __init__(self, connection: Any, params: PostgresParams, run_id: str, node: str) -> None:
        self.db, self.run_id, self.node, self.mode = connection, run_id, node, params.mode
        self.table, self.staging = f'"{params.table}"', f'"flow_staging_{node}"'
        self.names = ["run_id", *(name for name, _ in COLUMNS)]

    async def create(self) -> None:
        upsert = self.mode == "upsert"
        typed = ", ".join(
            f"{n} {t}{' NOT NULL PRIMARY KEY' if upsert and n == 'id' else ''}" for n, t in COLUMNS
        )
        await self.db.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (run_id TEXT, {typed})")
        keyed = await self.db.fetchval(
            "SELECT count(*) FROM pg_index WHERE indrelid = $1::regclass AND indisprimary", self.table
        )
        if bool(keyed) != upsert:
            made = "keyed by id (upsert)" if keyed else "without a key (append)"
            raise ValueError(f"table {self.table} was made {made}; mode {self.mode}: name another table")
        for table, names in SIDE.items():
            cols = ", ".join(f'"{n}" {_SIDE_TYPES.get(n, "TEXT")}' for n in names.split())
            await self.db.execute(f"CREATE TABLE IF NOT EXISTS {table} ({cols})")
        await self.db.execute(RUNS)
        # Per session, emptied at every commit: a batch's rows, in order (seq).
        await self.db.execute(
            f"CREATE TEMP TABLE {self.staging} (seq BIGINT, LIKE {self.table}) ON COMMIT DELETE ROWS"
        )
        columns = ", ".join(self.names)
        if upsert:
            updates = ", ".join(f"{c} = excluded.{c}" for c in self.names if c != "id")
            self.insert = (
                f"INSERT INTO {self.table} ({columns}) SELECT DISTINCT ON (id) {columns} FROM {self.staging}"
                f" ORDER BY id, seq DESC ON CONFLICT (id) DO UPDATE SET {updates}"
            )
        else:
            self.insert = (
                f"INSERT INTO {self.table} ({columns}) SELECT {columns} FROM {self.staging} ORDER BY seq"
            )

    async def products(self, products: list[Product]) -> None:
        rows = []
        for seq, product in enumerate(products):
            values = list(msgspec.structs.astuple(product))
            values[-3] = _instant(
                values[-3]
            )  # processed_at (COLUMNS order: ..., processed_at, quality, extra)
            values[-1] = _encode(values[-1]).decode()
            rows.append((seq, self.run_id, *values))
        async with self.db.transaction():
            await self.db.copy_records_to_table(
                self.staging.strip('"'), records=rows, columns=["seq", *self.names]
            )
            await self.db.execute(self.insert)

    async def side(self, item: Any) -> None:
        from .sqlite import _side_row

        table, row = _side_row(self.run_id, item)
        names = SIDE[table].split()
        values = list(row)  # raw, fields and stats come as JSON text: the JSONB columns take it
        marks = ", ".join(f"${i}" for i in range(1, len(names) + 1))
        quoted = ", ".join(f'"{n}"' for n in names)
        await self.db.execute(f"INSERT INTO {table} ({quoted}) VALUES ({marks})", *values)

    async def run_row(self, **values: Any) -> None:
        await upsert_run(self.db, self.run_id, self.node, values)


async def upsert_run(db: Any, run_id: str, node: str, values: dict[str, Any]) -> None:
    names = list(values)
    marks = ", ".join(f"${i}" for i in range(3, len(names) + 3))
    updates = ", ".join(f"{n} = excluded.{n}" for n in names)
    await db.execute(
        f"INSERT INTO runs (run_id, node, {', '.join(names)}) VALUES ($1, $2, {marks})"
        f" ON CONFLICT (run_id, node) DO UPDATE SET {updates}",
        run_id, node, *values.values(),
    )  # fmt: skip


@stage(
    "postgres",
    PostgresParams,
    consumes=(ProductBatch, ErrorRecord, DeadLetter, WindowStats),
    produces=None,
    fan_in=True,
)
async def postgres(source: AsyncIterator[Any], params: PostgresParams, ctx: Any) -> AsyncIterator[Any]:
    """Write products (upsert by id, or append), dead letters, errors and windows
    to PostgreSQL, a COPY and one INSERT per batch, with a `runs` row per run."""
    import asyncpg

    from .sqlite import _utc

    run_id, node = ctx.run_id, ctx.node
    ctx.at_run_end(lambda run: _record_run(params.dsn, run_id, node, run))
    connection = await asyncpg.connect(params.dsn)
    counts = {"products": 0, "dead_letters": 0, "errors": 0}
    ended = "stopped"
    try:
        server = Server(connection, params, run_id, node)
        await server.create()
        await server.run_row(graph=ctx.graph, status="running", started_at=_utc(time.time()))
        async for item in source:
            if isinstance(item, ProductBatch):
                await server.products(item.products)
                counts["products"] += len(item.products)
            else:
                await server.side(item)
                if isinstance(item, DeadLetter | ErrorRecord):
                    counts["dead_letters" if isinstance(item, DeadLetter) else "errors"] += 1
            yield item  # passed on, counted as written, once committed
        ended = "ended"
    except Exception as exc:
        ended = f"failed: {type(exc).__name__}: {exc}"
        raise
    finally:
        await _finish(connection, run_id, node, {"sink": ended, "finished_at": _utc(time.time()), **counts})


async def _finish(connection: Any, run_id: str, node: str, values: dict[str, Any]) -> None:
    """How the sink ended on its runs row, then the connection closed (cut,
    if a cancelled batch left a transaction open: the server rolls it back)."""
    if connection.is_in_transaction():
        connection.terminate()
        return
    # If this fails, the run's end completes the row as far as it can (_record_run).
    with contextlib.suppress(Exception):
        await upsert_run(connection, run_id, node, values)
    await connection.close()


async def _record_run(dsn: str, run_id: str, node: str, run: dict[str, Any]) -> None:
    """The run's final status, losses and ledger on this sink's row."""
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(RUNS)
        values = {"graph": run["graph"], "status": run["status"], "finished_at": run["finished_at"]}
        values |= {"lost": _encode(run["lost"]).decode(), "ledger": _encode(run["ledger"]).decode()}
        await upsert_run(connection, run_id, node, values)
    finally:
        await connection.close()


KIND = postgres
