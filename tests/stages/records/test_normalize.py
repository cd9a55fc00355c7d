"""normalize: Records in, ProductBatch out; a bad record is a dead letter with its reason."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flow.items import DeadLetter
from flow.problems import SpecError
from flow.testing import run_graph
from stages.records.items import ProductBatch, Records
from stages.records.normalize import NormalizeParams, _compile
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


KEYS = ["id", "a", "b", "unit-amount", "k0", "é"]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
    max_leaves=12,
)
PATHS = st.lists(st.sampled_from(KEYS), min_size=1, max_size=3).map(".".join)


def walk(record: Any, path: str) -> Any:
    """The documented meaning of a dotted path, on the record decoded whole."""
    value = record
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


@given(st.dictionaries(st.sampled_from(KEYS), JSON, max_size=6), st.lists(PATHS, min_size=1, max_size=5))
def test_the_compiled_mapping_reads_what_the_path_names(record, paths):
    # The typed decode (only the keys the paths start with) must read the same
    # value as walking the whole record: missing keys, nulls, non-object steps,
    # keys that are no Python identifiers, paths sharing their first key.
    text = msgspec.json.encode(record)
    mapping = _compile(tuple((f"f{i}", path) for i, path in enumerate(paths)))
    decoded, whole = mapping.decode(text), msgspec.json.decode(text)  # as served: no inf in JSON
    assert [mapping.get[f"f{i}"](decoded) for i in range(len(paths))] == [walk(whole, p) for p in paths]


def test_a_record_that_is_not_an_object_is_a_dead_letter_not_an_error(tmp_path):
    batch = Records("shop", 0, [(0, msgspec.Raw(b"[1, 2]")), (1, msgspec.Raw(b'{"id": 1, "title": "T", "price": 2}'))])
    sinks = normalize([batch], tmp_path, "{normalize: {preset: dummyjson}}")
    assert [p.id for p in sinks["out"][0].products] == ["shop:1"]
    [letter] = sinks["dead"]
    assert (letter.position, letter.raw, letter.reason.split(":")[0]) == (0, [1, 2], "a record is not a JSON object")
    assert letter.timestamp == sinks["out"][0].products[0].processed_at  # the batch's moment, as its products'


@pytest.mark.parametrize("workers", ["2", "{processes: 1}"])
def test_a_pool_of_threads_or_processes_gives_what_the_loop_gives(tmp_path, workers):
    records = [
        (i, {"id": i, "title": f" Item {i} ", "price": f"${i},50" if i % 7 else None, "category": ["Home", "x"],
             "sku": 10**30 + i})  # an integer beyond 64 bits in an extra field
        for i in range(60)
    ]
    batches = [Records.of("shop", page, records[page * 20 : page * 20 + 20]) for page in range(3)]
    extra = "extra: {sku: sku}"
    inline = normalize(batches, tmp_path / "inline", f"{{normalize: {{preset: dummyjson, {extra}}}}}")
    pooled = normalize(
        batches, tmp_path / "pool", f"{{normalize: {{preset: dummyjson, {extra}, workers: {workers}}}}}"
    )

    def seen(sinks: dict[str, list[Any]]) -> tuple[Any, ...]:
        products = sorted((p.id, p.title, p.price, p.category, p.extra["sku"]) for b in sinks["out"] for p in b.products)
        dead = sorted((d.page, d.position, d.reason) for d in sinks["dead"])
        return products, dead

    assert seen(pooled) == seen(inline)
    assert len(seen(inline)[0]) == 51 and len(seen(inline)[1]) == 9  # every 7th has no price


@pytest.mark.parametrize(
    ("params", "in_flight"),
    [("{}", 1), ("{workers: 3}", 3), ("{workers: {processes: 2}}", 2), ("{workers: 3, concurrency: 5}", 5)],
)
def test_batches_in_flight_default_to_one_on_the_loop_and_to_a_pools_size(params, in_flight):
    """On the loop a batch runs to its end (no await but for its dead
    letters): one at a time, with no task per batch. A pool is kept busy."""
    import yaml

    config = {"preset": "dummyjson", **yaml.safe_load(params)}
    assert msgspec.convert(config, NormalizeParams).in_flight == in_flight


def test_map_auto_fails_loudly_when_its_mapping_rejects_most_of_a_later_page(tmp_path):
    """Read from first records that are not typical (no price, a sale price),
    the mapping takes `sale_price`; a later page without one would be all
    dead letters: they are, with why, and an error makes the run fail."""
    first = Records.of("shop", 0, [(i, {"id": i, "name": f"n{i}", "price": None, "sale_price": 2.5})
                                   for i in range(5)])  # fmt: skip
    later = Records.of("shop", 1, [(i, {"id": 10 + i, "name": f"m{i}", "price": 9.5}) for i in range(10)])
    sinks: dict[str, list[Any]] = {}
    result = run_graph(GRAPH.replace("NORMALIZE", "{normalize: {map: auto}}"), sinks=sinks, out_dir=tmp_path,
                       kinds=[typed_source("batches", Records, [first, later])])  # fmt: skip
    assert [p.price for batch in sinks["out"] for p in batch.products] == [2.5] * 5
    assert len(sinks["dead"]) == 10 and all(d.reason == "price missing" for d in sinks["dead"])
    [error] = [e for e in result.errors if e["error"] == "mapping_doubtful"]
    assert "price: sale_price" in error["detail"] and "rejected 10 of 10 records of page 1" in error["detail"]
    assert result.lost  # the run does not pass for whole
