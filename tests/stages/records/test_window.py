"""window: products pass on unchanged; closed windows go out on NODE.windows."""

from __future__ import annotations

import json
from typing import Any

from flow.testing import run_graph
from stages.records.items import ProductBatch
from stages.records.product import Product
from stages.records.windows import WindowStats
from tests.stages.typed import typed_source

GRAPH = """\
version: 1
nodes:
  shop: {pipe: [batches, WINDOW]}
  out: {from: shop, pipe: [testing_sink]}
  windows: {from: shop.windows, pipe: [testing_sink]}
"""


def product(n: int, price: float, category: str = "lamps", source: str = "a") -> Product:
    return Product(
        id=f"{source}:{n}", source_id=str(n), title=f"Item {n}", source=source, price=price,
        currency="USD", category=category, processed_at="2026-01-01T00:00:00Z",
    )  # fmt: skip


BATCHES = [
    ProductBatch("a", 0, [product(0, 10.0), product(1, 20.0, "desks"), product(2, 30.0)]),
    ProductBatch("a", 1, []),
    ProductBatch("b", 0, [product(3, 40.0, source="b"), product(4, 50.0, "desks", "b")]),
]


def window(stage: str, tmp_path: Any) -> dict[str, list[Any]]:
    sinks: dict[str, list[Any]] = {}
    kinds = [typed_source("batches", ProductBatch, BATCHES)]
    result = run_graph(GRAPH.replace("WINDOW", stage), sinks=sinks, out_dir=tmp_path, kinds=kinds)
    assert result.status == "completed"
    return sinks


def test_count_windows_cover_every_product_once_and_products_pass_unchanged(tmp_path):
    sinks = window("{window: {count: 2}}", tmp_path)
    assert sinks["out"] == BATCHES
    windows = sinks["windows"]
    assert all(isinstance(w, WindowStats) and w.node == "shop" for w in windows)
    assert [(w.first, w.last, w.count) for w in windows] == [(0, 2, 2), (2, 4, 2), (4, 6, 1)]
    assert [w.price.avg for w in windows] == [15.0, 35.0, 50.0]  # type: ignore[union-attr]
    assert [w.category_distribution for w in windows] == [
        {"lamps": 1, "desks": 1}, {"lamps": 2}, {"desks": 1},
    ]  # fmt: skip
    assert [w.per_source for w in windows] == [{"a": 2}, {"a": 1, "b": 1}, {"b": 1}]
    assert [w.trend for w in windows] == [None, 133.33, 42.86]


def test_sliding_count_windows_overlap_and_the_file_matches_the_port(tmp_path):
    sinks = window("{window: {count: 4, slide: 2, path: w/windows.jsonl}}", tmp_path)
    windows = sinks["windows"]
    assert [(w.first, w.last, w.count) for w in windows] == [(0, 4, 4), (2, 6, 3), (4, 8, 1)]
    lines = (tmp_path / "w" / "windows.jsonl").read_text().splitlines()
    assert [json.loads(line)["count"] for line in lines] == [4, 3, 1]
    assert sinks["out"] == BATCHES
