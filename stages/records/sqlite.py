"""`sqlite`: products, and whatever side outputs the node reads (dead
letters, errors, closed windows), into a SQLite database: one transaction per
batch, so a crash loses at most the batch being written.

Tables (created when missing; the products table from the Product record):

    products      a column per Product field (TEXT, REAL; `extra` as JSON) and
                  `run_id`, the run that wrote the row. mode: upsert (the
                  default): `id` is the primary key and a product written
                  again replaces its row, so re-runs converge on one row per
                  product. mode: append: every product is a new row.
    dead_letters  run_id, node, stage, endpoint, page, position, reason, id,
                  raw (the record as served, JSON), timestamp
    errors        run_id, node, stage, error, detail, endpoint, fields (JSON), timestamp
    windows       run_id, node, start, end, count, stats (the whole window, JSON)
    runs          run_id (key), graph, status, started_at, finished_at,
                  products, dead_letters, errors, lost and ledger (JSON): the
                  export's metadata. Inserted as `running` when the sink
                  starts; when its input ends the counts are written, and when
                  the run ends the engine's status, losses and ledger.

The journal is WAL with synchronous=NORMAL: a committed batch survives the
process being killed (not a power cut: that is synchronous=FULL's price).
sqlite3 objects stay on the thread that made them, so the connection lives
on one worker thread; the event loop hands it one batch at a time and
waits, so memory holds one batch, and other stages run while it writes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from flow.items import DeadLetter, ErrorRecord
from flow.registry import Params, stage

from .items import Product, ProductBatch
from .windows import WindowStats

_fields = msgspec.structs.fields
_SQL_TYPES = {str: "TEXT", float: "REAL", int: "INTEGER", bool: "INTEGER"}
# (column, SQL type, stored as JSON text) for each Product field, in order
FIELDS = [(f.name, _SQL_TYPES.get(f.type, "TEXT"), f.type not in _SQL_TYPES) for f in _fields(Product)]
_encode = msgspec.json.Encoder().encode
SIDE_TABLES = (
    "CREATE TABLE IF NOT EXISTS dead_letters (run_id TEXT, node TEXT, stage TEXT, endpoint TEXT,"
    " page INTEGER, position INTEGER, reason TEXT, id TEXT, raw TEXT, timestamp TEXT)",
    "CREATE TABLE IF NOT EXISTS errors (run_id TEXT, node TEXT, stage TEXT, error TEXT, detail TEXT,"
    " endpoint TEXT, fields TEXT, timestamp TEXT)",
    "CREATE TABLE IF NOT EXISTS windows (run_id TEXT, node TEXT, start REAL, end REAL, count INTEGER,"
    " stats TEXT)",
    "CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, graph TEXT, status TEXT, started_at TEXT,"
    " finished_at TEXT, products INTEGER, dead_letters INTEGER, errors INTEGER, lost TEXT, ledger TEXT)",
)


class SqliteParams(Params):
    path: str = "products.db"  # relative paths are under run.out
    mode: Literal["upsert", "append"] = "upsert"  # upsert: one row per product id; append: a row per write
    table: str = "products"  # the products table's name

    def __post_init__(self) -> None:
        if not self.table.isidentifier():
            raise ValueError(f"table: {self.table!r} is not a plain name (letters, digits, _)")


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Database:
    """The sink's connection and statements; every method runs on the
    sink's one worker thread."""

    def __init__(self, path: str, params: SqliteParams, run_id: str) -> None:
        import sqlite3

        self.run_id, self.table = run_id, params.table
        self.db = sqlite3.connect(path, isolation_level=None)  # transactions are explicit
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self._create(params.mode)
        columns = ["run_id", *(name for name, _, _ in FIELDS)]
        marks = ", ".join("?" * len(columns))
        insert = f"INSERT INTO {self.table} ({', '.join(columns)}) VALUES ({marks})"
        if params.mode == "upsert":
            updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != "id")
            insert += f" ON CONFLICT(id) DO UPDATE SET {updates}"
        self.insert = insert
        self.as_json = [is_json for _, _, is_json in FIELDS]

    def _create(self, mode: str) -> None:
        key = " PRIMARY KEY" if mode == "upsert" else " NOT NULL"
        columns = ", ".join(f"{n} {t}{key if n == 'id' else ''}" for n, t, _ in FIELDS)
        self.db.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (run_id TEXT, {columns})")
        info = self.db.execute(f"PRAGMA table_info({self.table})").fetchall()
        have = {row[1] for row in info}
        keyed = any(row[1] == "id" and row[5] for row in info)
        missing = [n for n, _, _ in FIELDS if n not in have]
        if missing or keyed != (mode == "upsert"):
            made = "keyed by id (upsert)" if keyed else "without a key (append)"
            raise ValueError(
                f"table {self.table!r} in this file was made {made} with columns {sorted(have)}; "
                f"mode {mode} needs {'a key' if mode == 'upsert' else 'none'} and every Product field: "
                "name another table or file"
            )
        if mode == "append":
            self.db.execute(f"CREATE INDEX IF NOT EXISTS {self.table}_id ON {self.table} (id)")
        for statement in SIDE_TABLES:
            self.db.execute(statement)

    def transaction(self, statement: str, rows: list[tuple[Any, ...]]) -> None:
        self.db.execute("BEGIN")
        try:
            self.db.executemany(statement, rows)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def products(self, products: list[Product]) -> None:
        run_id, json, astuple = self.run_id, self.as_json, msgspec.structs.astuple
        rows = [
            (run_id, *(_encode(v).decode() if j else v for v, j in zip(astuple(p), json, strict=True)))
            for p in products
        ]
        self.transaction(self.insert, rows)

    def side(self, items: list[Any]) -> None:
        """Dead letters, errors and windows, in one transaction per call."""
        self.db.execute("BEGIN")
        try:
            for item in items:
                table, row = _side_row(self.run_id, item)
                self.db.execute(f"INSERT INTO {table} VALUES ({', '.join('?' * len(row))})", row)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def run_row(self, **values: Any) -> None:
        """Insert this run's row, or update the columns given."""
        names = ", ".join(values)
        updates = ", ".join(f"{name} = excluded.{name}" for name in values)
        self.db.execute(
            f"INSERT INTO runs (run_id, {names}) VALUES (?, {', '.join('?' * len(values))})"
            f" ON CONFLICT(run_id) DO UPDATE SET {updates}",
            (self.run_id, *values.values()),
        )

    def close(self) -> None:
        self.db.close()


def _side_row(run_id: str, item: Any) -> tuple[str, tuple[Any, ...]]:
    if isinstance(item, DeadLetter):
        raw = None if item.raw is None else _encode(item.raw).decode()
        ident = None if item.id is None else str(item.id)
        row = (item.node, item.stage, item.endpoint, item.page, item.position, item.reason, ident, raw)
        return "dead_letters", (run_id, *row, item.timestamp)
    if isinstance(item, ErrorRecord):
        fields = _encode(item.fields).decode()
        row = (item.node, item.stage, item.error, item.detail, item.endpoint, fields, item.timestamp)
        return "errors", (run_id, *row)
    stats = _encode(item).decode()
    return "windows", (run_id, item.node, item.start, item.end, item.count, stats)


@stage(
    "sqlite",
    SqliteParams,
    consumes=(ProductBatch, ErrorRecord, DeadLetter, WindowStats),
    produces=None,
    fan_in=True,
)
async def sqlite(source: AsyncIterator[Any], params: SqliteParams, ctx: Any) -> AsyncIterator[Any]:
    """Write products (upsert by id, or append), dead letters, errors and windows
    to a SQLite file, one transaction per batch, with a `runs` row per run."""
    import asyncio  # here, not at the top: `flow validate` imports the params only
    import sqlite3
    from concurrent.futures import ThreadPoolExecutor

    path = ctx.output_path(params.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"flow-sqlite-{ctx.node}")

    def call(work: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return loop.run_in_executor(pool, lambda: work(*args, **kwargs))

    run_id = ctx.run_id
    try:
        db: Database = await call(Database, str(path), params, run_id)
    except (sqlite3.Error, ValueError) as exc:
        pool.shutdown(wait=False)
        raise ValueError(f"sqlite {path}: {exc}") from exc
    ctx.at_run_end(lambda run: _record_run(str(path), run_id, run))
    counts = {"products": 0, "dead_letters": 0, "errors": 0}
    try:
        await call(db.run_row, graph=ctx.graph, status="running", started_at=_utc(time.time()))
        async for item in source:
            if isinstance(item, ProductBatch):
                await call(db.products, item.products)
                counts["products"] += len(item.products)
            else:
                await call(db.side, [item])
                if isinstance(item, DeadLetter):
                    counts["dead_letters"] += 1
                elif isinstance(item, ErrorRecord):
                    counts["errors"] += 1
            yield item
        await call(db.run_row, finished_at=_utc(time.time()), **counts)
    finally:
        await asyncio.shield(call(db.close))
        pool.shutdown(wait=False)


async def _record_run(path: str, run_id: str, run: dict[str, Any]) -> None:
    """The run's final status, losses and ledger on its row (the engine calls
    this once the run has ended; the sink's own connection is closed by then)."""
    import asyncio
    import sqlite3

    def write() -> None:
        db = sqlite3.connect(path, isolation_level=None)
        try:
            lost, ledger = _encode(run["lost"]).decode(), _encode(run["ledger"]).decode()
            db.execute(
                "UPDATE runs SET status = ?, finished_at = ?, lost = ?, ledger = ? WHERE run_id = ?",
                (run["status"], run["finished_at"], lost, ledger, run_id),
            )
        finally:
            db.close()

    await asyncio.to_thread(write)


KIND = sqlite
