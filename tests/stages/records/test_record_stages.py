"""The whole default chain against mocks with faults and heterogeneity on:
conservation from the servers' ground truth to the report."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import msgspec

from flow.graph import check
from flow.registry import default_registry
from flow.runtime import Runtime
from flow.spec import parse_spec
from flow.testing import run_virtual
from mocks import LoopClock, MockServer, ServerSpec

CHAIN = """\
version: 1
run: {deadline: 10m}
mocks: {a: {style: dummyjson}, b: {style: platzi}, c: {style: reqres}, d: {style: jsonserver}, e: {style: cursor}}
x-fetch: &fetch
  fetch: {retry: {retries: 3, backoff: 100ms, max: 1s}, breaker: {failures: 50}}
nodes:
  a: {pipe: [{paginate: {url: "${mocks.a.url}/products", style: skip_limit}}, {rate_limit: {rate: 5/s}}, *fetch, {parse: {schema: dummyjson}}, {normalize: {preset: dummyjson}}]}
  b: {pipe: [{paginate: {url: "${mocks.b.url}/api/v1/products", style: offset}}, {rate_limit: {rate: 5/s}}, *fetch, {parse: {schema: platzi}}, {normalize: {preset: platzi}}]}
  c: {pipe: [{paginate: {url: "${mocks.c.url}/api/products", style: page, headers: {x-api-key: reqres-free-v1}}}, {rate_limit: {rate: 5/s}}, *fetch, {parse: {schema: reqres}}, {normalize: {preset: reqres}}]}
  d: {pipe: [{paginate: {url: "${mocks.d.url}/products", style: link}}, {rate_limit: {rate: 5/s}}, *fetch, {parse: {schema: jsonserver}}, {normalize: {preset: jsonserver}}]}
  e: {pipe: [{paginate: {url: "${mocks.e.url}/items", style: cursor}}, {rate_limit: {rate: 5/s}}, *fetch, {parse: {schema: cursor}}, {normalize: {preset: cursor}}]}
  products: {from: [a, b, c, d, e], pipe: [merge, dedupe, {window: {count: 50}}]}
  report: {from: [products, products.windows, "*.errors", "*.dead_letters"], pipe: [summary_json]}
  rejects: {from: "*.dead_letters", pipe: [{collect: {path: dead_letters.jsonl}}]}
  trends: {from: products.windows, pipe: [{collect: {path: windows.jsonl}}]}
  failures: {from: "*.errors", pipe: [{collect: {path: errors.jsonl}}]}
"""
STYLES = {"a": "dummyjson", "b": "platzi", "c": "reqres", "d": "jsonserver", "e": "cursor"}


def test_conservation_from_ground_truth_to_the_report(tmp_path):
    """Also the side outputs, routed by the graph to JSON-lines sinks: every
    malformed record served is one dead-letter line carrying the record as
    the server rendered it; the windows file holds every product once."""

    async def main() -> tuple[Any, dict[str, Any], dict[str, Any]]:
        servers = {
            name: MockServer(
                ServerSpec(
                    style=style,
                    products=240,
                    seed=5,
                    heterogeneity=0.5,
                    defect_rate=0.08,
                    duplicate_rate=0.05,
                    error_rate=0.2,
                    truncate_rate=0.05,
                    html_rate=0.05,
                    latency="5ms..150ms",
                ),
                clock=LoopClock(),
            )
            for name, style in STYLES.items()
        }
        for server in servers.values():
            await server.start()
        try:
            spec = parse_spec(CHAIN, default_registry(plugins=False), env={}, refs={name: server.url for name, server in servers.items()})
            assert check(spec) == []
            result = await Runtime(spec, out_dir=tmp_path).run()
            truths = {name: server.stats()["truth"] for name, server in servers.items()}
            served_raw = {  # what each server rendered for its malformed slots
                (name, m["index"]): msgspec.json.decode(
                    server.style.render_page(server.catalogue, m["index"], m["index"] + 1)
                )[0]
                for name, server in servers.items()
                for m in truths[name]["served"]["malformed"]
            }
            return result, truths, served_raw
        finally:
            for server in servers.values():
                await server.close()

    result, truths, served_raw = run_virtual(main())
    assert result.status == "completed"
    report = json.loads((tmp_path / "summary.json").read_text())
    ids = [p["id"] for p in report["products"]]
    assert len(ids) == len(set(ids))  # no duplicates in the output
    assert report["summary"]["total_products"] == len(ids)
    windows = report["metrics"]["windows"]  # tumbling windows of 50 products cover each product once
    assert sum(w["count"] for w in windows) == len(ids) and all(w["count"] == 50 for w in windows[:-1])
    assert report["summary"]["sources"] == sorted(STYLES)
    # The report agrees with itself: per-source rows add up to the totals, and
    # every source's ledger balances: no page and no record vanished.
    per_source = report["per_source"]
    for name, row in per_source.items():
        ledger = row["ledger"]
        assert ledger["pages"]["unaccounted"] == 0 and ledger["records"]["unaccounted"] == 0, (name, ledger)
        assert ledger["pages"]["planned"] > 0 and ledger["records"]["received"] > 0
    assert sum(row["products"] for row in per_source.values()) == report["summary"]["total_products"]
    failed_pages = [e for e in report["errors"] if e.get("records_expected")]
    dead = sum(row["dead_letters"] for row in per_source.values())
    lost = sum(e["records_expected"] for e in failed_pages)
    assert report["summary"]["success_rate"] == round(len(ids) / (len(ids) + dead + lost), 4)
    page_failures = [e for e in report["errors"] if e["error"] != "invalid_record"]
    assert report["summary"]["status"] == ("partial" if page_failures else "complete")
    for name, truth in truths.items():
        served = truth["served"]
        got = {p["source_id"] for p in report["products"] if p["source"] == name}
        assert got == {str(i) for i in served["valid"]}, name  # every valid record served is in the output
        dead = [d for d in result.dead_letters if d["endpoint"] == name]
        assert len(dead) == len(served["malformed"]), name  # every malformed one is a dead letter
        expected_dead = Counter((m["index"] // 20, m["index"] % 20) for m in served["malformed"])
        assert Counter((d["page"], d["position"]) for d in dead) == expected_dead, name
        # Duplicates: every served duplicate slot whose original was served too is a counted drop.
        valid_positions = {str(i) for i in served["valid"]}
        assert all(str(d["id"]) in valid_positions for d in served["duplicates"])
    # Every copy of a valid record beyond the first one served is a counted drop.
    dropped = sum(c.get("duplicates", 0) for c in result.counters.values())  # counted on each source
    extra_copies = sum(
        t["served"]["records"] - len(t["served"]["malformed"]) - len(t["served"]["valid"])
        for t in truths.values()
    )
    assert dropped == extra_copies > 0
    page_errors = [e for e in report["errors"] if e["error"] != "invalid_record"]
    # Bodies that are not JSON are retried by fetch; a page fails only when all its attempts did.
    assert {e["error"] for e in page_errors} <= {"invalid_json_after_retries", "html_instead_of_json_after_retries",
                                                "http_500_after_retries", "http_502_after_retries",
                                                "http_503_after_retries", "pagination_stopped"}  # fmt: skip
    assert all({"endpoint", "error", "timestamp"} <= set(e) for e in report["errors"])

    # The side outputs, as the graph routed them.
    letters = [json.loads(line) for line in (tmp_path / "dead_letters.jsonl").read_text().splitlines()]
    assert len(letters) == len(served_raw) > 0
    got_raw = {(d["endpoint"], d["page"] * 20 + d["position"]): d["raw"] for d in letters}
    assert got_raw == served_raw  # one line per malformed record served, with the record itself
    assert all(d["reason"] and d["stage"] == "normalize" for d in letters)
    routed = [json.loads(line) for line in (tmp_path / "windows.jsonl").read_text().splitlines()]
    assert routed == windows  # the same closed windows, whichever sink reads them
    # Against the servers' truth: the windows hold each distinct valid record served exactly once.
    per_source = Counter()
    for w in routed:
        per_source.update(w["per_source"])
    assert per_source == Counter({name: len(t["served"]["valid"]) for name, t in truths.items()})
    errors = [json.loads(line) for line in (tmp_path / "errors.jsonl").read_text().splitlines()]
    assert Counter(e["error"] for e in errors) == Counter(e["error"] for e in page_errors) != Counter()
