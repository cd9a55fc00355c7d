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
    errors        run_id, node, stage, item, error, detail, endpoint, fields
                  (JSON), timestamp
    windows       run_id, node, start, end, count, stats (the whole window, JSON)
    runs          run_id and node (the key: several sinks may share a file),
                  graph, status, sink, started_at, finished_at, products,
                  dead_letters, errors, lost and ledger (JSON): the export's
                  metadata. Inserted when the sink starts (status `running`);
                  when the sink ends, its counts and how it ended (`sink`:
                  ended, stopped, or failed: why); when the run ends, the
                  engine's status, losses and ledger.

The journal is WAL with synchronous=NORMAL: a committed batch survives the
process being killed (not a power cut: that is synchronous=FULL's price);
keep the `-wal` file beside the database until it is next opened. Batches
are written on the event loop as they come (see the stage), so memory holds
one batch. Each write takes the lock first (`BEGIN IMMEDIATE`): while
another connection holds it, the stage waits off the loop, up to
`busy_timeout`, and then fails.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from flow.items import DeadLetter, ErrorRecord
from flow.registry import Params, stage
from flow.units import Duration

from .items import Product, ProductBatch
from .product import plain_type
from .windows import WindowStats

_fields = msgspec.structs.fields
_SQL_TYPES = {str: "TEXT", float: "REAL", int: "INTEGER", bool: "INTEGER"}
# (column, SQL type, stored as JSON text) for each Product field, in order
FIELDS = [
    (f.name, _SQL_TYPES.get(plain_type(f.type), "TEXT"), plain_type(f.type) not in _SQL_TYPES)
    for f in _fields(Product)
]
OPTIONAL = {f.name for f in _fields(Product) if f.type is not plain_type(f.type)}  # added to older tables
_encode = msgspec.json.Encoder().encode
SIDE = {  # table -> its columns
    "dead_letters": "run_id node stage endpoint page position reason id raw timestamp",
    "errors": "run_id node stage item error detail endpoint fields timestamp",
    "windows": "run_id node start end count stats",
}
_TYPES = {"page": "INTEGER", "position": "INTEGER", "item": "INTEGER", "count": "INTEGER"}  # bounds: ISO text
RUNS = (
    "CREATE TABLE IF NOT EXISTS runs (run_id TEXT, node TEXT, graph TEXT, status TEXT, sink TEXT,"
    " started_at TEXT, finished_at TEXT, products INTEGER, dead_letters INTEGER, errors INTEGER,"
    " lost TEXT, ledger TEXT, PRIMARY KEY (run_id, node))"
)


class SqliteParams(Params):
    path: str = "products.db"  # relative paths are under run.out
    mode: Literal["upsert", "append"] = "upsert"  # upsert: one row per product id; append: a row per write
    table: str = "products"  # the products table's name
    busy_timeout: Duration = Duration.default(30.0)  # how long a write waits while another connection writes

    def __post_init__(self) -> None:
        check_table_name(self.table)


def check_table_name(table: str) -> None:
    """A products table's name: a plain name, not one of the side tables'."""
    if not table.isidentifier():
        raise ValueError(f"table: {table!r} is not a plain name (letters, digits, _)")
    if table in (*SIDE, "runs") or table.lower().startswith(("sqlite_", "pg_", "flow_staging")):
        taken = "dead_letters, errors, windows, runs, sqlite_*, pg_*, flow_staging*"
        raise ValueError(f"table: {table!r} is taken ({taken})")


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Database:
    """The sink's connection and its statements (identifiers quoted: a table
    may be named like an SQL keyword)."""

    def __init__(self, path: str, params: SqliteParams, run_id: str, node: str) -> None:
        import sqlite3

        self.run_id, self.node, self.table = run_id, node, f'"{params.table}"'
        # timeout=0: a locked database raises at once; the stage waits off the loop.
        self.db = sqlite3.connect(path, isolation_level=None, timeout=0)  # transactions are explicit
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._create(params)
        except BaseException:
            self.db.close()
            raise
        columns = ["run_id", *(name for name, _, _ in FIELDS)]
        marks = ", ".join("?" * len(columns))
        insert = f"INSERT INTO {self.table} ({', '.join(columns)}) VALUES ({marks})"
        if params.mode == "upsert":
            updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != "id")
            insert += f" ON CONFLICT(id) DO UPDATE SET {updates}"
        self.insert = insert
        self.as_json = [is_json for _, _, is_json in FIELDS]

    def _create(self, params: SqliteParams) -> None:
        upsert = params.mode == "upsert"
        key = " NOT NULL PRIMARY KEY" if upsert else " NOT NULL"
        columns = ", ".join(f"{n} {t}{key if n == 'id' else ''}" for n, t, _ in FIELDS)
        self.db.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (run_id TEXT, {columns})")
        info = self.db.execute(f"PRAGMA table_info({self.table})").fetchall()
        have = {row[1] for row in info}
        keyed = any(row[1] == "id" and row[5] for row in info)
        for name, kind, _ in FIELDS:  # a field added since the table was made: a column more
            if name not in have and name in OPTIONAL:
                self.db.execute(f"ALTER TABLE {self.table} ADD COLUMN {name} {kind}")
                have.add(name)
        missing = [n for n, _, _ in FIELDS if n not in have]
        if missing or keyed != upsert:
            made = "keyed by id (upsert)" if keyed else "without a key (append)"
            raise ValueError(
                f"table {params.table!r} in this file was made {made} with columns {sorted(have)}; "
                f"mode {params.mode} needs {'a key' if upsert else 'none'} and every Product field: "
                "name another table or file"
            )
        if not upsert:
            self.db.execute(f'CREATE INDEX IF NOT EXISTS "{params.table}_id" ON {self.table} (id)')
        for table, names in SIDE.items():
            typed = ", ".join(f'"{n}" {_TYPES.get(n, "TEXT")}' for n in names.split())
            self.db.execute(f"CREATE TABLE IF NOT EXISTS {table} ({typed})")
        self.db.execute(RUNS)

    def transaction(self, statement: str, rows: list[tuple[Any, ...]]) -> None:
        """One transaction, taking the write lock first; on a failure it is
        rolled back (if SQLite has not already) and the error raised as it came."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(statement, rows)
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def products(self, products: list[Product]) -> None:
        run_id, json, astuple = self.run_id, self.as_json, msgspec.structs.astuple
        rows = [
            (run_id, *(_encode(v).decode() if j else v for v, j in zip(astuple(p), json, strict=True)))
            for p in products
        ]
        self.transaction(self.insert, rows)

    def side(self, item: Any) -> None:
        """A dead letter, error or window, in a transaction of its own."""
        table, row = _side_row(self.run_id, item)
        names = ", ".join(f'"{n}"' for n in SIDE[table].split())
        self.transaction(f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(row))})", [row])

    def run_row(self, **values: Any) -> None:
        """Insert this run's row for this sink, or update the columns given."""
        upsert_run(self.db, self.run_id, self.node, values)

    def close(self) -> None:
        self.db.close()


def upsert_run(db: Any, run_id: str, node: str, values: dict[str, Any]) -> None:
    names = ", ".join(values)
    updates = ", ".join(f"{name} = excluded.{name}" for name in values)
    db.execute(
        f"INSERT INTO runs (run_id, node, {names}) VALUES (?, ?, {', '.join('?' * len(values))})"
        f" ON CONFLICT(run_id, node) DO UPDATE SET {updates}",
        (run_id, node, *values.values()),
    )


def _side_row(run_id: str, item: Any) -> tuple[str, tuple[Any, ...]]:
    if isinstance(item, DeadLetter):
        raw = None if item.raw is None else _encode(item.raw).decode()
        ident = item.id if item.id is None or isinstance(item.id, str) else _encode(item.id).decode()
        row = (item.node, item.stage, item.endpoint, item.page, item.position, item.reason, ident, raw)
        return "dead_letters", (run_id, *row, item.timestamp)
    if isinstance(item, ErrorRecord):
        fields = _encode(item.fields).decode()
        row = (item.node, item.stage, item.item, item.error, item.detail, item.endpoint, fields)
        return "errors", (run_id, *row, item.timestamp)
    stats = _encode(item).decode()
    return "windows", (run_id, item.node, item.start, item.end, item.count, stats)


@stage(
    "sqlite",
    SqliteParams,
    consumes=(ProductBatch, ErrorRecord, DeadLetter, WindowStats),
    produces=None,
    fan_in=True,
    store=True,
)
async def sqlite(source: AsyncIterator[Any], params: SqliteParams, ctx: Any) -> AsyncIterator[Any]:
    """Write products (upsert by id, or append), dead letters, errors and windows
    to a SQLite file, one transaction per batch, with a `runs` row per run."""
    import sqlite3  # here, not at the top: `flow validate` imports the params only

    path = ctx.output_path(params.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    run_id, node = ctx.run_id, ctx.node
    ctx.at_run_end(lambda run: _record_run(str(path), params, run_id, node, run))
    db = await _when_free(params, lambda: Database(str(path), params, run_id, node))
    counts = {"products": 0, "dead_letters": 0, "errors": 0}
    ended = "stopped"  # how the sink ended: replaced unless it was cancelled
    try:
        started = _utc(time.time())
        await _when_free(params, lambda: db.run_row(graph=ctx.graph, status="running", started_at=started))
        async for item in source:
            # Written on the event loop, a batch at a time (~1 ms for 100
            # products): on a worker thread the hand-off and the GIL, which
            # sqlite3 drops and takes back for every row while the loop runs
            # Python, cost 15-25% of the sink's speed (bench/sinks.py).
            if isinstance(item, ProductBatch):
                await _when_free(params, lambda item=item: db.products(item.products))
            else:
                await _when_free(params, lambda item=item: db.side(item))
            tally(counts, item)
            yield item  # passed on, counted as written, once committed
        ended = "ended"
    except (Exception, sqlite3.Error) as exc:
        ended = f"failed: {type(exc).__name__}: {exc}"
        raise
    finally:
        # If this fails too, the run's end completes the row as far as it can (_record_run).
        with contextlib.suppress(sqlite3.Error):
            db.run_row(sink=ended, finished_at=_utc(time.time()), **counts)
        db.close()


def tally(counts: dict[str, int], item: Any) -> None:
    """What a database sink wrote, for its runs row: products, dead letters, errors."""
    if isinstance(item, ProductBatch):
        counts["products"] += len(item.products)
    elif isinstance(item, DeadLetter):
        counts["dead_letters"] += 1
    elif isinstance(item, ErrorRecord):
        counts["errors"] += 1


async def _when_free(params: SqliteParams, write: Any) -> Any:
    """`write()`, waiting while another connection holds the database's
    lock (off the loop: a pause, then again), at most `busy_timeout`."""
    import asyncio
    import sqlite3

    waited, pause = 0.0, 0.01
    while True:
        try:
            return write()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if waited >= params.busy_timeout:
                raise sqlite3.OperationalError(f"{exc} for {waited:.1f} s (busy_timeout)") from exc
        await asyncio.sleep(pause)
        waited, pause = waited + pause, min(pause * 2, 0.5)


async def _record_run(path: str, params: SqliteParams, run_id: str, node: str, run: dict[str, Any]) -> None:
    """The run's final status, losses and ledger on this sink's row (the
    engine calls this once the run has ended; the sink's own connection is
    closed by then). The row is made if the sink never got to make it."""
    import sqlite3

    def write() -> None:
        db = sqlite3.connect(path, isolation_level=None, timeout=0)
        try:
            db.execute(RUNS)
            values = {"graph": run["graph"], "status": run["status"], "finished_at": run["finished_at"]}
            values |= {"lost": _encode(run["lost"]).decode(), "ledger": _encode(run["ledger"]).decode()}
            upsert_run(db, run_id, node, values)
        finally:
            db.close()

    await _when_free(params, write)


KIND = sqlite
