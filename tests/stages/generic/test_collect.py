"""collect: what reaches it as JSON lines, one per record of a batch; or only counted."""

from __future__ import annotations

import json
from typing import Any

from flow.items import DeadLetter, ErrorRecord
from flow.testing import run_graph
from flow.units import Duration
from stages.http.limiter import SlidingWindowLimiter
from stages.http.paging import PageRequest, PageResponse
from stages.records.items import ProductBatch, Records
from stages.records.product import Product
from tests.stages.typed import typed_source

T = "2026-01-01T00:00:00.000Z"
PRODUCT = Product(
    id="s:1",
    source_id="1",
    title="Lamp",
    source="s",
    price=2.5,
    currency="USD",
    category="lamps",
    processed_at=T,
)
ERROR = ErrorRecord(node="s", stage="fetch", error="http_404", detail="gone", timestamp=T, fields={"page": 3})
LETTER = DeadLetter(
    node="s", stage="parse", endpoint="s", page=0, position=2, reason="why", raw=[1], timestamp=T
)


def lines(path: Any) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_line_per_record_of_a_batch_and_per_side_item(tmp_path):
    items = [
        [{"n": 1}, {"n": 2}],
        {"n": 3},
        ProductBatch("s", 0, [PRODUCT, PRODUCT]),
        Records.of("s", 0, [(0, {"id": 7}), (4, {"id": 8})]),
        ERROR,
        LETTER,
        {"every": Duration(0.25), "limiter": SlidingWindowLimiter(5)},
    ]
    graph = "version: 1\nnodes:\n  out: {pipe: [{testing_source: {name: items}}, {collect: {path: sub/out.jsonl}}]}\n"
    result = run_graph(graph, sources={"items": items}, out_dir=tmp_path)
    assert result.status == "completed"
    got = lines(tmp_path / "sub" / "out.jsonl")
    assert got[:3] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert [p["id"] for p in got[3:5]] == ["s:1", "s:1"]
    assert got[5:7] == [{"id": 7}, {"id": 8}]
    assert got[7] == {
        "node": "s", "stage": "fetch", "item": None, "error": "http_404", "detail": "gone", "page": 3, "timestamp": T,
    }  # fmt: skip
    assert (got[8]["reason"], got[8]["raw"], got[8]["position"]) == ("why", [1], 2)
    assert got[9] == {"every": "250ms", "limiter": None}  # durations as text; no limiter state
    assert len(got) == 10
    assert result.nodes["out"].stages[-1].items_out == len(items)


def test_without_a_path_it_counts_and_writes_nothing(tmp_path):
    graph = "version: 1\nnodes:\n  out: {pipe: [{sequence: {items: 7, batch: 3}}, collect]}\n"
    result = run_graph(graph, out_dir=tmp_path)
    assert result.nodes["out"].stages[-1].items_out == 3
    assert list(tmp_path.iterdir()) == []


def test_error_records_routed_from_every_node(tmp_path):
    def page(body: bytes) -> PageResponse:
        return PageResponse(PageRequest("shop", "http://127.0.0.1/p", {}, {}, 0), 200, body, {}, 2)

    graph = """\
version: 1
nodes:
  a: {pipe: [pages_a, parse, testing_sink]}
  b: {pipe: [pages_b, parse, testing_sink]}
  failures: {from: "*.errors", pipe: [{collect: {path: errors.jsonl}}]}
"""
    kinds = [
        typed_source("pages_a", PageResponse, [page(b"<html/>")]),
        typed_source("pages_b", PageResponse, [page(b"[")]),
    ]
    run_graph(graph, out_dir=tmp_path, kinds=kinds)
    got = sorted(lines(tmp_path / "errors.jsonl"), key=lambda e: e["node"])
    assert [(e["node"], e["stage"], e["error"], e["endpoint"], e["page"], e["attempts"]) for e in got] == [
        ("a", "parse", "html_instead_of_json", "shop", 0, 2),
        ("b", "parse", "invalid_json", "shop", 0, 2),
    ]


def test_records_served_indented_are_written_one_a_line(tmp_path):
    import msgspec

    from stages.records.items import Records as RawRecords

    served = b'{\n  "id": 7,\n  "title": "A\\u00e9"\n}'
    batch = RawRecords("s", 0, [(0, msgspec.Raw(served)), (1, msgspec.Raw(b'{"id": 8}'))])
    graph = "version: 1\nnodes:\n  out: {pipe: [{testing_source: {name: items}}, {collect: {path: r.jsonl}}]}\n"
    result = run_graph(graph, sources={"items": [batch]}, out_dir=tmp_path)
    assert result.status == "completed"
    text = (tmp_path / "r.jsonl").read_text()
    assert text.splitlines() == ['{"id":7,"title":"A\\u00e9"}', '{"id":8}']
    assert lines(tmp_path / "r.jsonl") == [{"id": 7, "title": "Aé"}, {"id": 8}]
