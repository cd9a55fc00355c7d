"""normalize: Records in, ProductBatch out; a bad record is a dead letter with its reason."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from flow.items import DeadLetter
from flow.problems import SpecError
from flow.testing import run_graph
from stages.records.items import ProductBatch, Records
from tests.stages.typed import typed_source

GRAPH = """\
version: 1
nodes:
  shop: {pipe: [batches, NORMALIZE]}
  out: {from: shop, pipe: [testing_sink]}
  dead: {from: shop.dead_letters, pipe: [testing_sink]}
"""


def normalize(batches: list[Records], tmp_path: Any, stage: str) -> dict[str, list[Any]]:
    sinks: dict[str, list[Any]] = {}
    kinds = [typed_source("batches", Records, batches)]
    result = run_graph(GRAPH.replace("NORMALIZE", stage), sinks=sinks, out_dir=tmp_path, kinds=kinds)
    assert result.status == "completed"
    return sinks


def summary(batch: ProductBatch) -> list[tuple[Any, ...]]:
    return [(p.id, p.source_id, p.title, p.source, p.price, p.currency, p.category) for p in batch.products]


def test_a_good_and_a_bad_record(tmp_path):
    good = {"id": 1, "title": "  Oak   Table ", "price": "19.90", "category": "Home Decoration"}
    bad = {"id": 2, "title": "Chair", "price": -5, "category": "furniture"}
    sinks = normalize(
        [Records.of("shop", 3, [(0, good), (1, bad)])], tmp_path, "{normalize: {preset: dummyjson}}"
    )
    [batch] = sinks["out"]
    assert (batch.endpoint, batch.page) == ("shop", 3)
    assert summary(batch) == [("shop:1", "1", "Oak Table", "shop", 19.9, "USD", "home-decoration")]
    [letter] = sinks["dead"]
    assert msgspec.structs.replace(letter, timestamp="") == DeadLetter(
        node="shop", stage="normalize", endpoint="shop", page=3, position=1, id=2,
        reason="price is negative (-5)", raw=bad, timestamp="",
    )  # fmt: skip


def test_the_cursor_preset_reads_nested_paths_and_cents(tmp_path):
    record = {"id": "it_7", "name": "Lamp", "unit_amount": 1999, "metadata": {"category": "Lighting"}}
    sinks = normalize([Records.of("shop", 0, [(0, record)])], tmp_path, "{normalize: {preset: cursor}}")
    assert summary(sinks["out"][0]) == [("shop:it_7", "it_7", "Lamp", "shop", 19.99, "USD", "lighting")]
    whole = normalize(
        [Records.of("shop", 0, [(0, record)])], tmp_path, "{normalize: {preset: cursor, price_in_cents: false}}"
    )
    assert [p.price for p in whole["out"][0].products] == [1999.0]


def test_map_overrides_the_preset_and_the_currency_applies(tmp_path):
    record = {"id": 4, "name": "Desk", "title": "ignored", "cost": {"amount": "7,50"}, "price": 1}
    stage = "{normalize: {preset: dummyjson, map: {title: name, price: cost}, currency: EUR}}"
    sinks = normalize([Records.of("shop", 0, [(0, record)])], tmp_path, stage)
    assert summary(sinks["out"][0]) == [("shop:4", "4", "Desk", "shop", 7.5, "EUR", "uncategorized")]
    assert sinks["dead"] == []


def test_records_without_id_title_or_price_path_are_rejected_up_front():
    with pytest.raises(SpecError, match=r"graph.yaml:3:\d+: map: no path for id, price, title"):
        run_graph(
            GRAPH.replace("NORMALIZE", "{normalize: {map: {category: c}}}"),
            kinds=[typed_source("batches", Records, [])],
        )
