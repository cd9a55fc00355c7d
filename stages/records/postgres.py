"""`postgres`: the `sqlite` sink's contract on a PostgreSQL server.

Products go in one transaction per batch: COPY into a temporary staging
table, then one `INSERT ... SELECT` into the products table (mode: upsert,
`ON CONFLICT (id) DO UPDATE`, the batch's last copy of an id winning; mode:
append, every row). Dead letters, errors and windows go to their tables
and the run to `runs`, one row per run and sink, completed by the engine
when the run ends (`ctx.at_run_end`), as in `sqlite`. Columns are typed
from the Product record: TEXT, DOUBLE PRECISION, `processed_at` TIMESTAMPTZ,
`extra` (and every JSON column) JSONB.

asyncpg is an optional extra (`pip install 'flow[postgres]'`). The
driver waits for the server off the event loop; the rows are built and
encoded on it. `dsn` is a URI (`postgresql://user@host/db`,
`postgresql:///db?host=/run/postgresql`), with `${ENV}` for secrets (the
report shows `${NAME}`, never the value). PostgreSQL stores no NUL
character: one in a text or JSON value is written as U+FFFD.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import msgspec

from flow.items import DeadLetter, ErrorRecord
from flow.registry import Params, stage

from .items import Product, ProductBatch
from .parquet import _instant
from .product import TIMES, plain_type
from .sqlite import OPTIONAL, SIDE, _side_row, check_table_name, tally
from .windows import WindowStats

_TYPES = {str: "TEXT", float: "DOUBLE PRECISION", int: "BIGINT", bool: "BOOLEAN"}
COLUMNS = [
    (f.name, "TIMESTAMPTZ" if f.name in TIMES else _TYPES.get(plain_type(f.type), "JSONB"))
    for f in msgspec.structs.fields(Product)
]
_SIDE_TYPES = {"page": "BIGINT", "position": "BIGINT", "item": "BIGINT", "count": "BIGINT", "raw": "JSONB",
               "fields": "JSONB", "stats": "JSONB"}  # fmt: skip (a window's start and end: ISO 8601 text)
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


# Every sink creating tables in one database takes this lock first:
# CREATE TABLE IF NOT EXISTS is not safe against a concurrent create.
_DDL_LOCK = 0x666C6F77  # "flow"
_JSON_COLUMNS = {n for n, t in COLUMNS if t == "JSONB"}
_BOUNDS_OF = (
    "SELECT column_name, data_type FROM information_schema.columns"
    " WHERE table_schema = current_schema() AND table_name = 'windows'"
)
_COLUMNS_OF = (
    "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped"
)
_KEY_OF = (
    "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
    " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::regclass AND i.indisprimary"
)
_TIME_COLUMNS = {n for n, t in COLUMNS if t == "TIMESTAMPTZ"}


def _text(value: Any) -> Any:
    """PostgreSQL stores no NUL character (TEXT refuses it, JSONB its
    escape): U+FFFD stands in for it; other values pass as they are."""
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


def _json_text(text: Any) -> Any:
    """JSON text with its NUL escapes replaced (JSONB refuses them)."""
    return text.replace("\\u0000", "\\ufffd") if isinstance(text, str) else text


def _json(value: Any) -> str:
    return _json_text(_encode(value).decode())


class Server:
    """The sink's connection and statements (identifiers quoted)."""

    def __init__(self, connection: Any, params: PostgresParams, run_id: str, node: str) -> None:
        self.db, self.run_id, self.node, self.mode = connection, run_id, node, params.mode
        self.name, self.table, self.staging = params.table, f'"{params.table}"', "flow_staging"
        self.names = ["run_id", *(name for name, _ in COLUMNS)]
        self.convert = [
            _instant if n in _TIME_COLUMNS else _json if n in _JSON_COLUMNS else _text for n, _ in COLUMNS
        ]

    async def create(self) -> None:
        upsert = self.mode == "upsert"
        key = " NOT NULL PRIMARY KEY" if upsert else " NOT NULL"
        typed = ", ".join(f"{n} {t}{key if n == 'id' else ''}" for n, t in COLUMNS)
        async with self.db.transaction():
            await self.db.execute("SELECT pg_advisory_xact_lock($1)", _DDL_LOCK)
            await self.db.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (run_id TEXT, {typed})")
            await self._check(upsert)
            if not upsert:
                await self.db.execute(f'CREATE INDEX IF NOT EXISTS "{self.name}_id" ON {self.table} (id)')
            for table, names in SIDE.items():
                cols = ", ".join(f'"{n}" {_SIDE_TYPES.get(n, "TEXT")}' for n in names.split())
                await self.db.execute(f"CREATE TABLE IF NOT EXISTS {table} ({cols})")
            await self._bounds_as_text()
            await self.db.execute(RUNS)
        # Per session (each sink has its own connection), emptied at every
        # commit: a batch's rows, in order (seq).
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

    async def _bounds_as_text(self) -> None:
        """A windows table made by an earlier flow holds its bounds as
        numbers (seconds since the run started); windows now have ISO 8601
        bounds: its columns become text, the old numbers kept as text."""
        kinds = dict(await self.db.fetch(_BOUNDS_OF))
        for column in ("start", "end"):
            if kinds.get(column) == "double precision":
                alter = f'ALTER TABLE windows ALTER COLUMN "{column}" TYPE TEXT USING "{column}"::text'
                await self.db.execute(alter)

    async def _check(self, upsert: bool) -> None:
        """An existing products table must have every column, and its key
        must be exactly `id` (upsert) or absent (append), as in sqlite."""
        have = {r[0] for r in await self.db.fetch(_COLUMNS_OF, self.table)}
        for name, kind in COLUMNS:  # a field added since the table was made: a column more
            if name not in have and name in OPTIONAL:
                await self.db.execute(f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS {name} {kind}")
                have.add(name)
        key = [r[0] for r in await self.db.fetch(_KEY_OF, self.table)]
        missing = [n for n in self.names if n not in have]
        if missing or key != (["id"] if upsert else []):
            made = f"keyed by {', '.join(key)}" if key else "without a key"
            raise ValueError(
                f"table {self.name!r} in this database was made {made} with columns {sorted(have)}; "
                f"mode {self.mode} needs {'the key id' if upsert else 'no key'} and every Product field: "
                "name another table or database"
            )

    async def products(self, products: list[Product]) -> None:
        convert, astuple = self.convert, msgspec.structs.astuple
        rows = [
            (seq, self.run_id, *(f(v) for f, v in zip(convert, astuple(p), strict=True)))
            for seq, p in enumerate(products)
        ]
        try:
            async with self.db.transaction():
                await self.db.copy_records_to_table(self.staging, records=rows, columns=["seq", *self.names])
                await self.db.execute(self.insert)
        except asyncio.CancelledError:
            self.db.terminate()  # the server rolls the batch back; no polite rollback to wait for
            raise

    async def side(self, item: Any) -> None:
        table, row = _side_row(self.run_id, item)
        names = SIDE[table].split()
        # raw, fields and stats come as JSON text, which JSONB takes as it is
        values = [
            _json_text(v) if _SIDE_TYPES.get(n) == "JSONB" else _text(v)
            for n, v in zip(names, row, strict=True)
        ]
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
    store=True,
    network=True,
)
async def postgres(source: AsyncIterator[Any], params: PostgresParams, ctx: Any) -> AsyncIterator[Any]:
    """Write products (upsert by id, or append), dead letters, errors and windows
    to PostgreSQL, a COPY and one INSERT per batch, with a `runs` row per run."""
    import asyncpg

    from .sqlite import _utc

    run_id, node = ctx.run_id, ctx.node
    try:
        connection = await asyncpg.connect(params.dsn)
    except (OSError, asyncpg.PostgresError) as exc:  # the DSN is not repeated: it may hold a password
        raise ConnectionError(f"cannot connect to PostgreSQL: {type(exc).__name__}: {exc}") from exc
    # How the sink ended and what it wrote, for its runs row: written by the
    # sink as it ends, and again with the run's verdict when the run ends.
    row: dict[str, Any] = {"sink": "stopped", "products": 0, "dead_letters": 0, "errors": 0}
    ctx.at_run_end(lambda run: _record_run(params.dsn, run_id, node, run, row))
    try:
        server = Server(connection, params, run_id, node)
        await server.create()
        await server.run_row(graph=ctx.graph, status="running", started_at=_utc(time.time()))
        async for item in source:
            await (server.products(item.products) if isinstance(item, ProductBatch) else server.side(item))
            tally(row, item)
            yield item  # passed on, counted as written, once committed
        row["sink"] = "ended"
    except Exception as exc:
        row["sink"] = f"failed: {type(exc).__name__}: {exc}"
        raise
    finally:
        row["sink_finished_at"] = _utc(time.time())
        await _finish(connection, run_id, node, row)


async def _finish(connection: Any, run_id: str, node: str, row: dict[str, Any]) -> None:
    """The sink's runs row, then the connection closed, within 2 s: a server
    that does not answer is cut off (a transaction a cancelled batch left
    open is rolled back by the server when the connection drops)."""
    if not connection.is_in_transaction():
        with contextlib.suppress(Exception):  # the run's end writes the row too (_record_run)
            async with asyncio.timeout(2):
                await upsert_run(connection, run_id, node, _row_values(row))
                await connection.close()
    if not connection.is_closed():
        connection.terminate()


def _row_values(row: dict[str, Any]) -> dict[str, Any]:
    values = {k: v for k, v in row.items() if k != "sink_finished_at"}
    return {**values, "finished_at": row.get("sink_finished_at")}


async def _record_run(dsn: str, run_id: str, node: str, run: dict[str, Any], row: dict[str, Any]) -> None:
    """The run's verdict (status, losses, ledger) and the sink's own end on
    its runs row, whatever became of the sink's connection."""
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _DDL_LOCK)
            await connection.execute(RUNS)
            values = {**_row_values(row), "graph": run["graph"], "status": run["status"]}
            values |= {"finished_at": run["finished_at"], "lost": _encode(run["lost"]).decode()}
            values["ledger"] = _encode(run["ledger"]).decode()
            await upsert_run(connection, run_id, node, values)
    finally:
        await connection.close()


KIND = postgres
