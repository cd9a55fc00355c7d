"""parse: page bodies in, Records out; non-objects dead-lettered, bad pages errors."""

from __future__ import annotations

from typing import Any

import msgspec

from flow.items import DeadLetter, ErrorRecord
from flow.testing import run_graph
from stages.http.paging import Pager, PageRequest, PageResponse
from stages.records.items import Records
from tests.stages.typed import typed_source

GRAPH = """\
version: 1
nodes:
  shop: {pipe: [pages, PARSE]}
  out: {from: shop, pipe: [testing_sink]}
  dead: {from: shop.dead_letters, pipe: [testing_sink]}
  errors: {from: shop.errors, pipe: [testing_sink]}
"""


def page(body: bytes, n: int = 0) -> PageResponse:
    return PageResponse(PageRequest("shop", f"http://127.0.0.1/p?page={n}", {}, {}, n), 200, body, {}, 1)


def parse(pages: list[PageResponse], tmp_path: Any, stage: str = "parse") -> dict[str, list[Any]]:
    sinks: dict[str, list[Any]] = {}
    result = run_graph(
        GRAPH.replace("PARSE", stage),
        sinks=sinks,
        out_dir=tmp_path,
        kinds=[typed_source("pages", PageResponse, pages)],
    )
    assert result.status == "completed"
    return sinks


def decoded(batches: list[Records]) -> list[tuple[str, int, list[tuple[int, Any]]]]:
    return [(batch.endpoint, batch.page, batch.decoded()) for batch in batches]


def test_records_keep_their_position_and_a_non_object_is_a_dead_letter(tmp_path):
    sinks = parse([page(b'[{"id": 1}, 42, {"id": 2}]'), page(b'[{"id": 3}]', 1)], tmp_path)
    assert decoded(sinks["out"]) == [
        ("shop", 0, [(0, {"id": 1}), (2, {"id": 2})]),
        ("shop", 1, [(0, {"id": 3})]),
    ]
    [letter] = sinks["dead"]
    assert msgspec.structs.replace(letter, timestamp="") == DeadLetter(
        node="shop", stage="parse", endpoint="shop", page=0, position=1,
        reason="a record is a JSON number", raw=42, timestamp="",
    )  # fmt: skip
    assert sinks["errors"] == []


def test_a_schema_or_items_key_finds_the_records_in_an_envelope(tmp_path):
    body = b'{"products": [{"id": 1}, ["x"]], "data": [{"id": 9}], "total": 2}'
    by_schema = parse([page(body)], tmp_path, "{parse: {schema: dummyjson}}")
    assert decoded(by_schema["out"]) == [("shop", 0, [(0, {"id": 1})])]
    assert [(d.raw, d.reason) for d in by_schema["dead"]] == [(["x"], "a record is a JSON array")]
    by_key = parse([page(body)], tmp_path, "{parse: {items: data}}")
    assert decoded(by_key["out"]) == [("shop", 0, [(0, {"id": 9})])]


def test_an_html_page_is_an_error_and_the_next_page_still_parses(tmp_path):
    html = b"  <html><body>502 Bad Gateway</body></html>"
    sinks = parse([page(html), page(b'[{"id": 1}', 1), page(b'[{"id": 5}]', 2)], tmp_path)
    assert decoded(sinks["out"]) == [("shop", 2, [(0, {"id": 5})])]
    assert all(isinstance(e, ErrorRecord) for e in sinks["errors"])
    assert [(e.error, e.node, e.endpoint, e.fields["page"]) for e in sinks["errors"]] == [
        ("html_instead_of_json", "shop", "shop", 0),
        ("invalid_json", "shop", "shop", 1),
    ]
    assert sinks["dead"] == []


def test_the_records_its_pager_decoded_are_reused_else_the_page_is_decoded_here(tmp_path):
    body = b'{"products": [{"id": 1}, 2], "data": [{"id": 9}], "total": 2}'
    pager = Pager(
        "shop", "http://127.0.0.1/p", "skip_limit", 10,
        params={}, headers={}, items_path="products", total_path="total", cursor_path=None,
    )  # fmt: skip
    envelope = pager.decode(body)
    response = PageResponse(PageRequest("shop", "http://127.0.0.1/p", {}, {}, 0), 200, body, {}, 1, envelope)
    same_key = parse([response], tmp_path, "{parse: {schema: dummyjson}}")
    assert decoded(same_key["out"]) == [("shop", 0, [(0, {"id": 1})])]
    assert same_key["out"][0].raws[0][1] is envelope.products[0]  # not decoded a second time
    assert [d.reason for d in same_key["dead"]] == ["a record is a JSON number"]
    other_key = parse([response], tmp_path, "{parse: {items: data}}")
    assert decoded(other_key["out"]) == [("shop", 0, [(0, {"id": 9})])]
