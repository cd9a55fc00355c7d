"""`postgres` against a real PostgreSQL server (tests/postgres_server.py, on
a unix socket): the same tables as `sqlite` for the same run, upsert across
runs, and the runs row completed at the run's end."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC
from typing import Any

import asyncpg
import msgspec
import pytest

from flow.testing import run_graph
from stages.records.items import ProductBatch
from tests.postgres_server import PostgresServer

from .test_sqlite import SIDE, product

GRAPH = """\
version: 1
nodes:
  p: {{pipe: [{{testing_source: {{name: p}}}}]}}
  side: {{pipe: [{{testing_source: {{name: side}}}}]}}
  to_sqlite: {{from: [p, side], pipe: [sqlite]}}
  to_postgres: {{from: [p, side], pipe: [{{postgres: {{dsn: "{dsn}", mode: {mode}}}}}]}}
"""


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with PostgresServer() as running:
        yield running


@pytest.fixture
def dsn(server: PostgresServer) -> Iterator[str]:
    """A database of its own for each test."""
    name = f"t{id(object())}"

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(server.dsn)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(admin(f"CREATE DATABASE {name}"))
    yield server.dsn.replace("postgresql:///postgres", f"postgresql:///{name}")
    asyncio.run(admin(f"DROP DATABASE {name}"))


def _postgres(dsn: str, query: str) -> list[tuple[Any, ...]]:
    async def fetch() -> list[tuple[Any, ...]]:
        connection = await asyncpg.connect(dsn)
        try:
            return [tuple(r) for r in await connection.fetch(query)]
        finally:
            await connection.close()

    return asyncio.run(fetch())


def _sqlite(path: Any, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(query).fetchall()


def test_postgres_and_sqlite_hold_the_same_tables_for_the_same_run(tmp_path, dsn):
    batches = [ProductBatch("s", 0, [product(1), product(2, brand="b")]), ProductBatch("s", 1, [product(3, 4.25)])]
    graph = GRAPH.format(dsn=dsn, mode="upsert")
    result = run_graph(graph, sources={"p": batches, "side": SIDE}, out_dir=tmp_path)
    assert result.status == "completed" and result.errors == [] and not result.lost
    columns = "id, source_id, title, source, price, currency, category, processed_at, quality, extra"
    rows_pg = _postgres(dsn, f"SELECT {columns} FROM products ORDER BY id")
    rows_sq = _sqlite(tmp_path / "products.db", f"SELECT {columns} FROM products ORDER BY id")
    as_sqlite = [
        (*r[:7], r[7].astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"), r[8], json.loads(r[9]))
        for r in rows_pg
    ]
    assert as_sqlite == [(*r[:9], json.loads(r[9])) for r in rows_sq] and len(rows_pg) == 3
    for table, order in (("dead_letters", "position"), ("errors", "error"), ("windows", "start")):
        pg = _postgres(dsn, f"SELECT * FROM {table} ORDER BY {order}")
        sq = _sqlite(tmp_path / "products.db", f"SELECT * FROM {table} ORDER BY {order}")
        decoded = [tuple(json.loads(v) if isinstance(v, str) and v[:1] in "{[" else v for v in row) for row in pg]
        assert decoded == [tuple(json.loads(v) if isinstance(v, str) and v[:1] in "{[" else v for v in row)
                           for row in sq] and len(pg) == 1, table  # fmt: skip
    ((status, sink, products, ledger),) = _postgres(dsn, "SELECT status, sink, products, ledger FROM runs")
    assert (status, sink, products) == ("completed", "ended", 3)
    assert json.loads(ledger) == json.loads(msgspec.json.encode(result.ledger))


def test_postgres_upserts_across_runs_and_keeps_the_batch_s_last_copy_of_an_id(tmp_path, dsn):
    graph = GRAPH.format(dsn=dsn, mode="upsert")
    run_graph(graph, sources={"p": [ProductBatch("s", 0, [product(1), product(2)])], "side": SIDE}, out_dir=tmp_path)
    again = [ProductBatch("s", 0, [product(2, 5.0), product(2, 9.0), product(3)])]  # id s:2 twice in one batch
    result = run_graph(graph, sources={"p": again, "side": SIDE}, out_dir=tmp_path)
    assert result.status == "completed" and not result.lost
    assert _postgres(dsn, "SELECT id, price FROM products ORDER BY id") == [("s:1", 1.5), ("s:2", 9.0), ("s:3", 1.5)]
    assert len(_postgres(dsn, "SELECT run_id FROM runs WHERE node = 'to_postgres'")) == 2


TWO_SINKS = """\
version: 1
nodes:
  p: {{pipe: [{{testing_source: {{name: p}}}}]}}
  side: {{pipe: [{{testing_source: {{name: side}}}}]}}
  keyed: {{from: [p, side], pipe: [{{postgres: {{dsn: "{dsn}", table: keyed}}}}]}}
  every: {{from: [p, side], pipe: [{{postgres: {{dsn: "{dsn}", table: every, mode: append}}}}]}}
"""


def test_two_sinks_make_their_tables_at_once_on_a_new_database_and_append_keeps_every_write(tmp_path, dsn):
    """Both sinks create the shared tables (runs, dead_letters, ...) at the
    same moment, in a database that has none: neither may fail on the other."""
    for _ in range(2):
        batches = [ProductBatch("s", 0, [product(1), product(2)]), ProductBatch("s", 1, [product(2, 9.0)])]
        result = run_graph(TWO_SINKS.format(dsn=dsn), sources={"p": batches, "side": SIDE}, out_dir=tmp_path)
        assert result.status == "completed" and result.errors == [] and not result.lost
    assert _postgres(dsn, "SELECT id, price FROM keyed ORDER BY id") == [("s:1", 1.5), ("s:2", 9.0)]
    every = _postgres(dsn, "SELECT id, price FROM every ORDER BY id, price")
    assert every == [("s:1", 1.5), ("s:1", 1.5), ("s:2", 1.5), ("s:2", 1.5), ("s:2", 9.0), ("s:2", 9.0)]
    assert sorted(_postgres(dsn, "SELECT node, sink, products FROM runs")) == [
        ("every", "ended", 3), ("every", "ended", 3), ("keyed", "ended", 3), ("keyed", "ended", 3)
    ]  # fmt: skip


def test_a_table_made_for_the_other_mode_is_refused_with_the_reason(tmp_path, dsn):
    graph = GRAPH.format(dsn=dsn, mode="upsert")
    run_graph(graph, sources={"p": [ProductBatch("s", 0, [product(1)])], "side": SIDE}, out_dir=tmp_path)
    result = run_graph(GRAPH.format(dsn=dsn, mode="append"), sources={"p": [ProductBatch("s", 0, [product(2)])],
                       "side": SIDE}, out_dir=tmp_path)  # fmt: skip
    (error,) = [e for e in result.errors if e["stage"] == "postgres"]
    assert "made keyed by id" in error["detail"] and "name another table or database" in error["detail"]
    assert _postgres(dsn, "SELECT id FROM products") == [("s:1",)] and result.lost


def test_a_nul_character_is_stored_as_a_replacement_character_not_a_failure(tmp_path, dsn):
    """PostgreSQL stores no NUL (TEXT refuses it, JSONB its escape), SQLite does:
    the sink writes U+FFFD in its place instead of failing the batch."""
    odd = msgspec.structs.replace(product(1), title="Lamp\x00 1", extra={"note": "a\x00b"})
    letter = msgspec.structs.replace(SIDE[0], raw={"title": "no\x00price"})
    result = run_graph(GRAPH.format(dsn=dsn, mode="upsert"),
                       sources={"p": [ProductBatch("s", 0, [odd])], "side": [letter, *SIDE[1:]]}, out_dir=tmp_path)  # fmt: skip
    assert result.status == "completed" and result.errors == [] and not result.lost
    ((title, extra),) = _postgres(dsn, "SELECT title, extra FROM products")
    assert title == "Lamp\ufffd 1" and json.loads(extra) == {"note": "a\ufffdb"}
    ((raw,),) = _postgres(dsn, "SELECT raw FROM dead_letters")
    assert json.loads(raw) == {"title": "no\ufffdprice"}


def test_a_windows_table_of_an_earlier_flow_takes_iso_bounds(tmp_path, dsn):
    """Windows had bounds in seconds (DOUBLE PRECISION); they are ISO 8601
    now: the columns become text, the old rows kept."""

    async def old_table() -> None:
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(
                'CREATE TABLE windows (run_id TEXT, node TEXT, "start" DOUBLE PRECISION, "end" DOUBLE PRECISION,'
                ' count BIGINT, stats JSONB)'
            )
            await connection.execute("INSERT INTO windows VALUES ('old', 'p', 0.5, 1.5, 3, '{}')")
        finally:
            await connection.close()

    asyncio.run(old_table())
    result = run_graph(GRAPH.format(dsn=dsn, mode="upsert"), sources={"p": [], "side": SIDE}, out_dir=tmp_path)
    assert result.status == "completed" and not result.errors, result.errors
    rows = _postgres(dsn, 'SELECT run_id, "start", "end" FROM windows ORDER BY run_id = \'old\' DESC')
    assert rows[0] == ("old", "0.5", "1.5")
    assert rows[1][1:] == ("2024-01-01T00:00:00.000Z", "2024-01-08T00:00:00.000Z")
