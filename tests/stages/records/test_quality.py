"""quality (the stage): every product scored; below `min_score` dropped and counted."""

from __future__ import annotations

from typing import Any

from flow.testing import run_graph
from stages.records.items import ProductBatch
from stages.records.product import Product
from tests.stages.typed import typed_source

GRAPH = "version: 1\nnodes:\n  shop: {pipe: [batches, QUALITY, testing_sink]}\n"


def product(n: int, title: str, category: str = "lamps", price: float = 9.0) -> Product:
    return Product(
        id=f"s:{n}", source_id=str(n), title=title, source="s", price=price, currency="USD",
        category=category, processed_at="2026-01-01T00:00:00Z",
    )  # fmt: skip


BATCH = ProductBatch(
    "s", 2, [product(1, "Desk Lamp"), product(2, "Lamp"), product(3, "Desk Lamp", "uncategorized", 0.0)]
)


def quality(stage: str, tmp_path: Any) -> tuple[ProductBatch, dict[str, int]]:
    sinks: dict[str, list[Any]] = {}
    kinds = [typed_source("batches", ProductBatch, [BATCH])]
    result = run_graph(GRAPH.replace("QUALITY", stage), sinks=sinks, out_dir=tmp_path, kinds=kinds)
    assert result.status == "completed"
    [batch] = sinks["shop"]
    return batch, result.counters.get("s", {})  # drops are counted on the source of the product


def test_every_product_is_scored_and_kept_by_default(tmp_path):
    batch, counters = quality("quality", tmp_path)
    assert [(p.id, p.quality) for p in batch.products] == [("s:1", 1.0), ("s:2", 0.85), ("s:3", 0.5)]
    assert (batch.endpoint, batch.page) == ("s", 2)
    assert "filtered" not in counters


def test_min_score_drops_below_and_keeps_at_the_threshold(tmp_path):
    batch, counters = quality("{quality: {min_score: 0.85}}", tmp_path)
    assert [(p.id, p.quality) for p in batch.products] == [("s:1", 1.0), ("s:2", 0.85)]
    assert counters["filtered"] == 1


def test_min_title_sets_what_counts_as_short(tmp_path):
    batch, _ = quality("{quality: {min_title: 4}}", tmp_path)
    assert [p.quality for p in batch.products] == [1.0, 1.0, 0.5]
