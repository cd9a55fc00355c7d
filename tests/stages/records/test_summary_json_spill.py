"""summary_json spills windows and price trends as it does errors: the
report reads as when it kept them in memory, every window once, in order,
and "metrics" on one compact line, as one encode() of the dict wrote it."""

from __future__ import annotations

import json

import msgspec

from flow.testing import run_graph
from stages.records.items import ProductBatch
from stages.records.product import Product
from tests.stages.typed import typed_source

GRAPH = """\
version: 1
nodes:
  shop: {pipe: [batches, {window: {count: 3}}]}
  report:
    from: [shop, shop.windows]
    pipe: [{summary_json: {path: out/report.json}}]
  trends: {from: shop.windows, pipe: [{collect: {path: out/windows.jsonl}}]}
"""


def product(n: int) -> Product:
    return Product(
        id=f"a:{n}", source_id=str(n), title=f"Item {n}", source="a", price=float(n % 5 + 1),
        currency="USD", category=("lamps", "desks", "chairs")[n % 3], processed_at="2026-01-01T00:00:00.000Z",
    )  # fmt: skip


def test_windows_and_trends_come_back_from_the_spill_in_order(tmp_path):
    products = [product(n) for n in range(50)]
    batches = [ProductBatch("a", k, products[k : k + 4]) for k in range(0, 50, 4)]
    result = run_graph(GRAPH, out_dir=tmp_path, kinds=[typed_source("batches", ProductBatch, batches)])
    assert (result.status, result.errors) == ("completed", [])
    text = (tmp_path / "out" / "report.json").read_bytes()
    report = json.loads(text)
    collected = [json.loads(line) for line in (tmp_path / "out" / "windows.jsonl").read_text().splitlines()]

    windows = report["metrics"]["windows"]
    assert len(windows) == 17 and windows == collected  # 50 products in windows of 3
    assert [w["count"] for w in windows] == [3] * 16 + [2]
    assert report["metrics"]["price_trends"] == [
        {
            "window": w["name"],
            "key": None,
            "start": w["first"],
            "end": w["last"],
            "count": w["count"],
            "avg_price": w["price"]["avg"],
            "trend_percent": w.get("trend"),
        }
        for w in windows
    ]
    metrics_line = next(line for line in text.splitlines() if line.startswith(b'"metrics": '))
    assert list(report["metrics"]) == ["category_distribution", "price_trends", "windows"]
    assert metrics_line == b'"metrics": ' + msgspec.json.encode(report["metrics"]) + b","
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")] == []
