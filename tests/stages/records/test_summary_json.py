"""summary_json: products, side outputs and windows from several inputs -> one JSON report."""

from __future__ import annotations

import json

from flow.items import DeadLetter, ErrorRecord
from flow.testing import run_graph
from stages.records.items import ProductBatch
from stages.records.product import Product
from tests.stages.typed import typed_source

GRAPH = """\
version: 1
nodes:
  shop: {pipe: [batches, {window: {count: 2}}]}
  bad: {pipe: [letters]}
  broken: {pipe: [failures]}
  report:
    from: [shop, shop.windows, bad, broken]
    pipe: [{summary_json: {path: out/report.json, dead_letters: out/dead.jsonl}}]
"""
T = "2026-01-01T00:00:00.000Z"


def product(n: int, price: float, source: str) -> Product:
    return Product(
        id=f"{source}:{n}", source_id=str(n), title=f"Item {n}", source=source, price=price,
        currency="USD", category="lamps" if n % 2 else "desks", processed_at=T,
    )  # fmt: skip


BATCHES = [
    ProductBatch("a", 0, [product(1, 10.0, "a"), product(2, 30.0, "a")]),
    ProductBatch("b", 0, [product(3, 5.0, "b")]),
]
LETTER = DeadLetter(
    node="b",
    stage="normalize",
    endpoint="b",
    page=0,
    position=1,
    reason="price missing",
    raw={"id": 4},
    timestamp=T,
)
ERROR = ErrorRecord(
    node="a", stage="fetch", error="http_503_after_retries", detail="503", timestamp=T, endpoint="a",
    fields={"page": 1, "attempts": 4},
)  # fmt: skip


def test_report_of_products_errors_dead_letters_and_windows(tmp_path):
    kinds = [
        typed_source("batches", ProductBatch, BATCHES),
        typed_source("letters", DeadLetter, [LETTER]),
        typed_source("failures", ErrorRecord, [ERROR]),
    ]
    result = run_graph(GRAPH, out_dir=tmp_path, kinds=kinds)
    assert (result.status, result.errors) == ("completed", [])
    report = json.loads((tmp_path / "out" / "report.json").read_text())

    assert [p["id"] for p in report["products"]] == ["a:1", "a:2", "b:3"]
    errors = sorted(report["errors"], key=lambda e: e["error"])
    assert [e["error"] for e in errors] == ["http_503_after_retries", "invalid_record"]
    assert errors[0] == {**ERROR.to_dict(), "item": None}
    assert {k: errors[1][k] for k in ("endpoint", "page", "position", "detail", "raw", "timestamp")} == {
        "endpoint": "b", "page": 0, "position": 1, "detail": "price missing", "raw": {"id": 4}, "timestamp": T,
    }  # fmt: skip
    assert [(w["first"], w["last"], w["count"]) for w in report["metrics"]["windows"]] == [
        (0, 2, 2),
        (2, 4, 1),
    ]
    assert [t["avg_price"] for t in report["metrics"]["price_trends"]] == [20.0, 5.0]
    assert report["metrics"]["category_distribution"] == {"lamps": 2, "desks": 1}
    assert {k: v for k, v in report["per_source"]["a"].items() if k != "ledger"} == {
        "records": 2, "normalized": 0, "products": 2, "price_min": 10.0, "price_avg": 20.0, "price_max": 30.0, "dead_letters": 0,
    }  # fmt: skip
    assert report["per_source"]["b"]["dead_letters"] == 1
    summary = report["summary"]
    # Every source node has a row too (here the test's sources are not the products' endpoints).
    assert (summary["total_products"], summary["success_rate"], summary["status"]) == (3, 0.75, "partial")
    assert summary["sources"] == ["a", "b", "bad", "broken", "shop"]
    letters = [json.loads(line) for line in (tmp_path / "out" / "dead.jsonl").read_text().splitlines()]
    assert [(d["reason"], d["raw"]) for d in letters] == [("price missing", {"id": 4})]
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")] == []


def test_no_input_is_an_empty_report_with_full_success(tmp_path):
    kinds = [
        typed_source("batches", ProductBatch, []),
        typed_source("letters", DeadLetter, []),
        typed_source("failures", ErrorRecord, []),
    ]
    run_graph(GRAPH, out_dir=tmp_path, kinds=kinds)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (report["products"], report["errors"]) == ([], [])
    assert sorted(report["per_source"]) == ["bad", "broken", "shop"]  # silent sources are listed, with zeros
    assert all(row["products"] == 0 for row in report["per_source"].values())
    assert "windows" not in report["metrics"]
    summary = report["summary"]
    assert (summary["total_products"], summary["success_rate"], summary["status"]) == (0, 1.0, "failed")


def test_a_run_cut_short_writes_its_own_partial_report(tmp_path):
    """The grace runs out while a stage hangs: the nodes feeding the sink are
    cancelled first, so the sink closes this run's report, with its status;
    an earlier run's report never stands in for it."""
    import asyncio

    from flow.registry import ANY, SAME, ConcurrentParams, stage

    @stage("hang", ConcurrentParams, consumes=ANY, produces=SAME, per_item=True)
    async def hang(item, params, ctx):
        """Never finish an item."""
        await asyncio.sleep(3600)

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.json").write_text('{"stale": true}')
    graph = (
        "version: 1\nrun: {deadline: 1s, grace: 1s}\nnodes:\n"
        "  shop: {pipe: [batches, hang]}\n"
        "  report: {from: shop, pipe: [{summary_json: {path: out/report.json}}]}\n"
    )
    result = run_graph(graph, out_dir=tmp_path, kinds=[typed_source("batches", ProductBatch, BATCHES), hang],
                       virtual=True)  # fmt: skip
    assert [e["error"] for e in result.errors] == ["deadline_exceeded", "grace_exceeded"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.json"]  # no temp file
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    # Every batch was stuck in the hung stage: this run's report, saying so.
    assert (report["summary"]["status"], report["products"]) == ("failed", []) and "stale" not in report
