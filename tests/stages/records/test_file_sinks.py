"""`parquet` and `jsonl`: the same products as `sqlite`, read back row for
row; row groups as asked; atomic files."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

import msgspec
import pyarrow.parquet as pq

from flow.testing import run_graph
from stages.records.items import Product, ProductBatch

GRAPH = """\
version: 1
nodes:
  p: {pipe: [{testing_source: {name: p}}]}
  to_parquet: {from: p, pipe: [{parquet: {row_group: 50, compression: snappy}}]}
  to_jsonl: {from: p, pipe: [jsonl]}
  to_sqlite: {from: p, pipe: [sqlite]}
"""


def product(n: int) -> Product:
    extra = {"brand": f"b{n}"} if n % 3 == 0 else {}
    return Product(id=f"s:{n}", source_id=str(n), title=f"Lamp {n} ✓", source="s", price=round(n * 1.25, 2),
                   currency="EUR" if n % 2 else "USD", category=f"c{n % 4}",
                   processed_at=f"2026-11-26T10:00:{n % 60:02d}.{n % 1000:03d}Z", quality=1 - n / 1000,
                   extra=extra)  # fmt: skip


def _as_rows(products: list[Product]) -> list[tuple]:
    return sorted(msgspec.structs.astuple(p) for p in products)


def test_parquet_jsonl_and_sqlite_hold_the_same_rows(tmp_path):
    products = [product(n) for n in range(1, 131)]
    batches = [ProductBatch("s", i, products[i * 20 : (i + 1) * 20]) for i in range(7)]
    result = run_graph(GRAPH, sources={"p": batches}, out_dir=tmp_path)
    assert result.status == "completed" and result.errors == [] and not result.lost
    expected = _as_rows(products)

    parquet = pq.ParquetFile(tmp_path / "products.parquet")
    assert parquet.metadata.num_rows == 130 and parquet.metadata.num_row_groups == 3  # 60 + 60 + 10
    assert str(parquet.schema_arrow.field("processed_at").type) == "timestamp[ms, tz=UTC]"
    assert str(parquet.schema_arrow.field("price").type) == "double"
    table = parquet.read().to_pylist()
    for row in table:
        row["processed_at"] = row["processed_at"].astimezone(UTC).isoformat(timespec="milliseconds")
        row["processed_at"] = row["processed_at"].replace("+00:00", "Z")
        row["extra"] = json.loads(row["extra"])
    assert sorted(tuple(r.values()) for r in table) == expected

    lines = (tmp_path / "products.jsonl").read_bytes().splitlines()
    decoded = [msgspec.json.decode(line, type=Product) for line in lines]
    assert _as_rows(decoded) == expected

    with sqlite3.connect(tmp_path / "products.db") as db:
        names = [c[1] for c in db.execute("PRAGMA table_info(products)") if c[1] != "run_id"]
        rows = db.execute(f"SELECT {', '.join(names)} FROM products").fetchall()
    assert sorted((*r[:-1], json.loads(r[-1])) for r in rows) == expected
    assert not list(tmp_path.glob(".*.tmp"))
    assert datetime.fromisoformat(table[0]["processed_at"].replace("Z", "+00:00")).tzinfo is not None


def test_parquet_without_pyarrow_is_refused_before_the_run(monkeypatch):
    import importlib.util

    from flow.registry import default_registry
    from flow.spec import SpecError, parse_spec

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a)
    )
    try:
        parse_spec(
            "version: 1\nnodes:\n  a: {pipe: [sequence, parquet]}\n", default_registry(plugins=False), env={}
        )
    except SpecError as err:
        assert str(err).startswith("graph.yaml:3:") and "pip install 'flow[parquet]'" in str(err)
    else:
        raise AssertionError("a graph naming parquet validated without pyarrow")


def test_processed_at_in_any_iso_form_becomes_a_utc_timestamp_and_a_non_time_is_named(tmp_path):
    forms = ["2026-11-26T10:00:00.123Z", "2026-11-26T11:00:00.123456+01:00", "2026-11-26T10:00:00"]
    products = [msgspec.structs.replace(product(n), processed_at=form) for n, form in enumerate(forms, 1)]
    graph = "version: 1\nnodes:\n  p: {pipe: [{testing_source: {name: p}}, parquet]}\n"
    result = run_graph(graph, sources={"p": [ProductBatch("s", 0, products)]}, out_dir=tmp_path)
    assert result.status == "completed" and not result.errors
    times = pq.read_table(tmp_path / "products.parquet").column("processed_at").to_pylist()
    assert [t.isoformat() for t in times] == [
        "2026-11-26T10:00:00.123000+00:00", "2026-11-26T10:00:00.123000+00:00", "2026-11-26T10:00:00+00:00"
    ]  # fmt: skip
    bad = [msgspec.structs.replace(product(9), processed_at="yesterday")]
    result = run_graph(graph, sources={"p": [ProductBatch("s", 0, bad)]}, out_dir=tmp_path / "bad")
    (error,) = [e for e in result.errors if e["stage"] == "parquet"]
    assert "processed_at 'yesterday' is not an ISO 8601 time" in error["detail"] and result.lost
    assert not (tmp_path / "bad" / "products.parquet").exists() and not list((tmp_path / "bad").glob(".*.tmp"))


def test_a_whole_file_sink_that_fails_at_its_end_counts_nothing_as_written(tmp_path):
    """parquet, jsonl, csv and summary_json rename their file into place at
    the end: until then nothing they took is written. Here the last row
    group is refused (a time that is no time), so no file appears, and the
    ledger says so instead of counting the products taken."""
    from flow.registry import Params, stage

    batches = [ProductBatch("s", 0, [product(n) for n in range(1, 4)]),
               ProductBatch("s", 1, [msgspec.structs.replace(product(4), processed_at="yesterday")])]  # fmt: skip

    class MadeParams(Params):
        """No parameters."""

    @stage("made", MadeParams, consumes=None, produces=ProductBatch)
    async def made(source, params, ctx):
        """The test's batches."""
        for batch in batches:
            yield batch

    graph = "version: 1\nnodes:\n  s: {pipe: [made]}\n  out: {from: s, pipe: [{parquet: {row_group: 1000}}]}\n"
    result = run_graph(graph, kinds=[made], out_dir=tmp_path)
    ledger = result.ledger["s"]["records"]
    assert ledger["expected"] == {"out": 4} and ledger["written"] == {"out": 0} and ledger["unaccounted"] == {"out": 4}
    assert any("out" in loss for loss in result.lost), result.lost
    assert not (tmp_path / "products.parquet").exists()
