"""`csv`: every product one row, columns as asked, the file atomic."""

from __future__ import annotations

import csv
import json

from flow.testing import run_graph
from stages.records.items import Product, ProductBatch


def product(n: int, **extra: object) -> Product:
    return Product(id=f"s:{n}", source_id=str(n), title=f"T, \"{n}\"", source="s", price=n + 0.5,
                   currency="USD", category="c", processed_at="2026-11-26T10:00:00Z", extra=dict(extra))  # fmt: skip


def test_rows_follow_the_products_and_the_columns(tmp_path):
    batches = [ProductBatch("s", 0, [product(1), product(2, brand="b")]), ProductBatch("s", 1, [product(3)])]
    graph = (
        "version: 1\nnodes:\n"
        "  all: {pipe: [{testing_source: {name: p}}, csv]}\n"
        "  some: {from: all_copy, pipe: [{csv: {path: out/some.csv, columns: [id, price, extra], delimiter: ';'}}]}\n"
        "  all_copy: {pipe: [{testing_source: {name: p}}]}\n"
    )
    result = run_graph(graph, sources={"p": batches}, out_dir=tmp_path)
    assert result.status == "completed" and result.errors == []
    with (tmp_path / "products.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == ["s:1", "s:2", "s:3"]
    assert rows[0]["title"] == 'T, "1"' and float(rows[1]["price"]) == 2.5  # quoting round-trips
    assert json.loads(rows[1]["extra"]) == {"brand": "b"}
    with (tmp_path / "out" / "some.csv").open(newline="") as f:
        some = list(csv.reader(f, delimiter=";"))
    assert some == [["id", "price", "extra"], ["s:1", "1.5", "{}"], ["s:2", "2.5", '{"brand":"b"}'], ["s:3", "3.5", "{}"]]
    assert not list(tmp_path.glob(".*.tmp")) and not list((tmp_path / "out").glob(".*.tmp"))


def test_unknown_columns_are_a_located_error():
    from flow.registry import default_registry
    from flow.spec import SpecError, parse_spec

    try:
        parse_spec("version: 1\nnodes:\n  a: {pipe: [sequence, {csv: {columns: [id, cost]}}]}\n",
                   default_registry(plugins=False), env={})  # fmt: skip
    except SpecError as err:
        assert str(err) == ("graph.yaml:3:40: columns: not Product fields: cost; fields: id, source_id, title, "
                            "source, price, currency, category, processed_at, timestamp, quality, extra")  # fmt: skip
    else:
        raise AssertionError("accepted a column that is not a Product field")
