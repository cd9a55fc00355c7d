"""`sqlite`: products upserted (or appended) by batch, side outputs in their
tables, and a `runs` row holding the run's status and ledger."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from flow.items import DeadLetter, ErrorRecord
from flow.testing import run_graph
from stages.records.items import Product, ProductBatch
from stages.records.sqlite import FIELDS
from stages.records.windows import PriceStats, WindowStats

STAMP = "2026-11-26T10:00:00.000Z"
GRAPH = """\
version: 1
nodes:
  p: {{pipe: [{{testing_source: {{name: p}}}}]}}
  side: {{pipe: [{{testing_source: {{name: side}}}}]}}
  db: {{from: [p, side], pipe: [{{sqlite: {{mode: {mode}}}}}]}}
"""


def product(n: int, price: float = 1.5, **extra: Any) -> Product:
    return Product(id=f"s:{n}", source_id=str(n), title=f"Lamp {n}", source="s", price=price, currency="USD",
                   category="lamps", processed_at=STAMP, quality=0.9, extra=dict(extra))  # fmt: skip


SIDE = [
    DeadLetter(
        node="p",
        stage="normalize",
        endpoint="s",
        page=1,
        position=3,
        reason="price missing",
        raw={"id": 9, "title": "no price"},
        id=9,
        timestamp=STAMP,
    ),
    ErrorRecord(
        node="p",
        stage="fetch",
        error="http_404",
        detail="HTTP 404",
        timestamp=STAMP,
        endpoint="s",
        fields={"page": 4, "attempts": 1},
    ),
    WindowStats(
        name="p#2",
        start="2024-01-01T00:00:00.000Z",
        end="2024-01-08T00:00:00.000Z",
        count=3,
        price=PriceStats(3, 1.0, 2.0, 3.0, 2.0, 3.0),
        by_category={},
        category_distribution={"lamps": 3},
        per_source={"s": 3},
        node="p",
    ),
]


def _run(
    tmp_path: Path, batches: list[ProductBatch], mode: str = "upsert", side: list[Any] | None = None
) -> Any:
    return run_graph(GRAPH.format(mode=mode), sources={"p": batches, "side": side or []}, out_dir=tmp_path)


def _rows(db: Path, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as connection:
        return connection.execute(query).fetchall()


def test_products_side_outputs_and_the_run_land_in_their_tables(tmp_path):
    batches = [
        ProductBatch("s", 0, [product(1), product(2, brand="b")]),
        ProductBatch("s", 1, [product(3, 4.25)]),
    ]
    result = _run(tmp_path, batches, side=SIDE)
    assert result.status == "completed" and result.errors == []
    db = tmp_path / "products.db"
    rows = _rows(
        db,
        "SELECT id, source_id, title, price, typeof(price), extra, quality, run_id FROM products ORDER BY id",
    )
    run_id = rows[0][-1]
    assert [r[:5] for r in rows] == [("s:1", "1", "Lamp 1", 1.5, "real"), ("s:2", "2", "Lamp 2", 1.5, "real"),
                                     ("s:3", "3", "Lamp 3", 4.25, "real")]  # fmt: skip
    assert [json.loads(r[5]) for r in rows] == [{}, {"brand": "b"}, {}] and {r[6] for r in rows} == {0.9}
    letters = _rows(db, "SELECT run_id, endpoint, page, position, reason, id, raw FROM dead_letters")
    assert letters == [(run_id, "s", 1, 3, "price missing", "9", '{"id":9,"title":"no price"}')]
    errors = _rows(db, "SELECT error, endpoint, fields FROM errors")
    assert [(e, p, json.loads(f)) for e, p, f in errors] == [("http_404", "s", {"page": 4, "attempts": 1})]
    windows = _rows(db, "SELECT node, start, end, count, stats FROM windows")
    assert windows[0][:4] == ("p", "2024-01-01T00:00:00.000Z", "2024-01-08T00:00:00.000Z", 3) and json.loads(windows[0][4])["category_distribution"] == {
        "lamps": 3
    }
    (run,) = _rows(
        db,
        "SELECT run_id, status, started_at, finished_at, products, dead_letters, errors, lost, ledger FROM runs",
    )
    assert run[:2] == (run_id, "completed") and run[2] <= run[3] and run[4:7] == (3, 1, 1)
    assert json.loads(run[7]) == result.lost and json.loads(run[8]) == json.loads(json.dumps(result.ledger))
    assert _rows(db, "PRAGMA journal_mode") == [("wal",)]


def test_upsert_converges_on_one_row_per_product_and_append_keeps_every_write(tmp_path):
    first = [ProductBatch("s", 0, [product(1), product(2)])]
    again = [ProductBatch("s", 0, [product(2, 9.0), product(3)])]
    one, two = _run(tmp_path, first), _run(tmp_path, again)
    db = tmp_path / "products.db"
    rows = _rows(db, "SELECT id, price, run_id FROM products ORDER BY id")
    assert [(i, p) for i, p, _ in rows] == [("s:1", 1.5), ("s:2", 9.0), ("s:3", 1.5)]  # the later write wins
    (earlier, products_then), (later, products_now) = _rows(
        db, "SELECT run_id, products FROM runs ORDER BY rowid"
    )
    assert earlier != later and products_then == products_now == 2
    assert [r for _, _, r in rows] == [earlier, later, later]  # each row says which run wrote it last
    assert one.status == two.status == "completed"
    (tmp_path / "append").mkdir()
    _run(tmp_path / "append", first, mode="append"), _run(tmp_path / "append", again, mode="append")
    appended = _rows(tmp_path / "append" / "products.db", "SELECT id, price FROM products ORDER BY rowid")
    assert appended == [("s:1", 1.5), ("s:2", 1.5), ("s:2", 9.0), ("s:3", 1.5)]


def test_a_table_made_for_the_other_mode_is_refused_with_the_reason(tmp_path):
    _run(tmp_path, [ProductBatch("s", 0, [product(1)])])
    result = _run(tmp_path, [ProductBatch("s", 0, [product(2)])], mode="append")
    assert result.status == "completed" and result.lost  # nothing written: the run says so
    (error,) = [e for e in result.errors if e["stage"] == "sqlite"]
    assert "made keyed by id (upsert)" in error["detail"] and "name another table or file" in error["detail"]
    assert _rows(tmp_path / "products.db", "SELECT id FROM products") == [("s:1",)]  # untouched


def test_a_batch_the_database_refuses_is_rolled_back_whole_and_the_run_says_it_lost_it(tmp_path):
    db = tmp_path / "products.db"
    with sqlite3.connect(db) as connection:  # a table the user made, with a rule a product breaks
        columns = ", ".join(f"{n} {t}{' PRIMARY KEY' if n == 'id' else ''}" for n, t, _ in FIELDS)
        connection.execute(f"CREATE TABLE products (run_id TEXT, {columns}, CHECK (price < 100))")
    batches = [ProductBatch("s", 0, [product(1)]), ProductBatch("s", 1, [product(2), product(3, 150.0)])]
    result = _run(tmp_path, batches)
    assert result.lost and any("CHECK constraint failed" in e["detail"] for e in result.errors)
    assert _rows(db, "SELECT id FROM products") == [("s:1",)]  # the first batch, not half of the second
    ((sink, products, status, lost),) = _rows(db, "SELECT sink, products, status, lost FROM runs")
    assert sink.startswith("failed: IntegrityError: CHECK constraint failed") and products == 1
    assert status == "completed" and json.loads(lost) == result.lost  # the engine's verdict, beside the sink's


def test_a_write_waits_while_another_connection_holds_the_lock_and_then_gives_up(tmp_path):
    db = tmp_path / "products.db"
    _run(tmp_path, [ProductBatch("s", 0, [product(1)])])  # the file and its tables exist
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer, for the whole (virtual) run
    try:
        graph = GRAPH.format(mode="upsert").replace("{mode: upsert}", "{mode: upsert, busy_timeout: 2s}")
        result = run_graph(graph, sources={"p": [ProductBatch("s", 0, [product(2)])], "side": []},
                           out_dir=tmp_path, virtual=True)  # fmt: skip
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    (error,) = [e for e in result.errors if e["stage"] == "sqlite"]
    assert "database is locked" in error["detail"] and "busy_timeout" in error["detail"] and result.lost
    (end,) = [e for e in result.errors if e["error"] == "at_run_end_failed"]  # the runs row could not be completed
    assert "database is locked" in end["detail"]
    assert _rows(db, "SELECT id FROM products") == [("s:1",)]


def test_a_table_named_like_a_keyword_works_and_the_side_tables_names_are_taken(tmp_path):
    graph = GRAPH.format(mode="upsert").replace("{mode: upsert}", "{mode: upsert, table: order}")
    result = run_graph(graph, sources={"p": [ProductBatch("s", 0, [product(1)])], "side": SIDE}, out_dir=tmp_path)
    assert result.status == "completed" and not result.lost
    assert _rows(tmp_path / "products.db", 'SELECT id FROM "order"') == [("s:1",)]
    from flow.registry import default_registry
    from flow.spec import SpecError, parse_spec

    for taken in ("runs", "errors", "sqlite_master"):
        try:
            parse_spec(f"version: 1\nnodes:\n  a: {{pipe: [sequence, {{sqlite: {{table: {taken}}}}}]}}\n",
                       default_registry(plugins=False), env={})  # fmt: skip
        except SpecError as err:
            assert "is taken" in str(err)
        else:
            raise AssertionError(f"accepted table: {taken}")


def test_a_table_name_that_is_not_a_plain_name_is_a_located_error():
    from flow.registry import default_registry
    from flow.spec import SpecError, parse_spec

    try:
        parse_spec("version: 1\nnodes:\n  a: {pipe: [sequence, {sqlite: {table: 'x; DROP'}}]}\n",
                   default_registry(plugins=False), env={})  # fmt: skip
    except SpecError as err:
        assert str(err).startswith("graph.yaml:3:") and "is not a plain name" in str(err)
    else:
        raise AssertionError("accepted a table name that is not a plain name")
