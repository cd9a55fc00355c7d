"""redact (the stage): personal data out of the named text fields, each removal counted."""

from __future__ import annotations

from typing import Any

from flow.testing import run_graph
from stages.records.items import ProductBatch
from stages.records.product import Product
from tests.stages.typed import typed_source

GRAPH = "version: 1\nnodes:\n  shop: {pipe: [batches, REDACT, testing_sink]}\n"


def product(title: str, category: str = "lamps") -> Product:
    return Product(
        id="s:1", source_id="1", title=title, source="s", price=1.0, currency="USD", category=category,
        processed_at="2026-01-01T00:00:00Z",
    )  # fmt: skip


def redact(batches: list[ProductBatch], stage: str, tmp_path: Any) -> tuple[list[Any], dict[str, int]]:
    sinks: dict[str, list[Any]] = {}
    kinds = [typed_source("batches", ProductBatch, batches)]
    result = run_graph(GRAPH.replace("REDACT", stage), sinks=sinks, out_dir=tmp_path, kinds=kinds)
    assert result.status == "completed"
    return sinks["shop"], result.counters.get("shop", {})


def test_titles_are_cleaned_and_removals_counted(tmp_path):
    clean = product("Desk Lamp")
    batches = [
        ProductBatch("s", 0, [product("Lamp, mail bob@example.com"), clean]),
        ProductBatch("s", 1, [product("  Call +1 (555) 123-4567  or ann@shop.co.uk ")]),
    ]
    out, counters = redact(batches, "redact", tmp_path)
    assert [[p.title for p in b.products] for b in out] == [
        ["Lamp, mail [redacted]", "Desk Lamp"], ["Call [redacted] or [redacted]"],
    ]  # fmt: skip
    assert [(b.endpoint, b.page) for b in out] == [("s", 0), ("s", 1)]
    assert out[0].products[1] == clean
    assert counters["redacted"] == 3


def test_the_named_fields_and_replacement(tmp_path):
    batches = [ProductBatch("s", 0, [product("bob@example.com", category="x bob@example.com")])]
    out, counters = redact(batches, "{redact: {fields: [category], replacement: '***'}}", tmp_path)
    [p] = out[0].products
    assert (p.title, p.category) == ("bob@example.com", "x ***")
    assert counters["redacted"] == 1
