"""The ledger on graph shapes beyond one straight line: fan-out to several
record sinks, a drop on one branch only, a diamond (a sink sees a record once
per path), a per-item sink that fails one batch, records labelled with a
source name that is not a node. Each balances exactly, or names the loss."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flow.registry import ConcurrentParams, stage
from flow.testing import run_graph
from stages.records.items import ProductBatch
from stages.records.product import Product
from tests.stages.typed import typed_source


def product(source: str, n: int, title: str = "Lamp") -> Product:
    return Product(id=f"{source}:{n}", source_id=str(n), title=f"{title} {n}", source=source, price=1.0,
                   currency="USD", category="lamps", processed_at="2026-01-01T00:00:00.000Z")  # fmt: skip


def batches(source: str = "shop", n: int = 10, copies: int = 3) -> list[ProductBatch]:
    """`n` products, then the first `copies` again: 5 to a batch."""
    items = [product(source, i) for i in range(n)] + [product(source, i) for i in range(copies)]
    return [ProductBatch(source, k, items[k : k + 5]) for k in range(0, len(items), 5)]


def run(text: str, items: list[ProductBatch], *extra: Any) -> Any:
    kinds = [typed_source("products_of", ProductBatch, items), *extra]
    return run_graph("version: 1\nnodes:\n  shop: {pipe: [products_of]}\n" + text, kinds=kinds)


def records(result: Any, source: str = "shop") -> dict[str, Any]:
    return result.ledger[source]["records"]


def test_a_sink_before_dedupe_and_one_after_both_balance():
    result = run(
        "  raw: {from: shop, pipe: [collect]}\n"
        "  deduped: {from: shop, pipe: [{dedupe: {key: id}}, collect]}\n",
        batches(),
    )
    assert (result.exit_code(), result.lost) == (0, [])
    got = records(result)
    assert (got["received"], got["duplicates"]) == (13, 3)
    assert got["expected"] == {"deduped": 10, "raw": 13} and got["written"] == got["expected"]
    assert got["unaccounted"] == {"deduped": 0, "raw": 0}


def test_two_branches_each_with_its_own_dedupe():
    result = run(
        "  a: {from: shop, pipe: [{dedupe: {key: id}}, collect]}\n"
        "  b: {from: shop, pipe: [{dedupe: {key: id}}, collect]}\n",
        batches(),
    )
    assert (result.exit_code(), result.lost) == (0, [])
    got = records(result)
    assert got["duplicates"] == 6 and got["written"] == {"a": 10, "b": 10}  # 3 dropped on each branch


def test_a_diamond_delivers_each_record_once_per_path():
    result = run(
        "  left: {from: shop, pipe: [redact]}\n"
        "  right: {from: shop, pipe: [{quality: {min_score: 0.95}}]}\n"
        "  out: {from: [left, right], pipe: [merge, collect]}\n",
        [*batches(copies=0), ProductBatch("shop", 99, [product("shop", 10, title="LAMP")])],  # caps: 0.9
    )
    assert (result.exit_code(), result.lost) == (0, [])
    got = records(result)
    # 11 received; by the left path all 11 arrive, by the right one 10 (one filtered).
    assert (got["received"], got["filtered"], got["written"], got["unaccounted"]) == (11, 1, {"out": 21}, {"out": 0})


def test_a_per_item_sink_that_fails_one_batch_has_its_records_unaccounted():
    class UploadParams(ConcurrentParams):
        fail_page: int = 5

    @stage("upload", UploadParams, consumes=ProductBatch, produces=None, per_item=True)
    async def upload(batch: ProductBatch, params: UploadParams, ctx: Any) -> None:
        """A per-item sink that fails on one batch."""
        await asyncio.sleep(0)
        if batch.page == params.fail_page:
            raise RuntimeError("the upload failed")

    for concurrency in (1, 4):
        result = run(f"  sink: {{from: shop, pipe: [{{upload: {{concurrency: {concurrency}}}}}]}}\n",
                     batches(n=20, copies=0), upload)  # fmt: skip
        assert records(result)["written"] == {"sink": 15} and records(result)["unaccounted"] == {"sink": 5}
        assert result.exit_code() == 1
        assert "source 'shop': 5 records unaccounted for at sink 'sink'" in result.lost


@pytest.mark.parametrize("drop", [False, pytest.param(True, marks=pytest.mark.loses_records)])
def test_records_labelled_with_a_name_that_is_not_a_node_have_a_ledger_too(drop):
    """A source stage labels its records `acme`: they get a ledger row, so a
    batch that vanishes (a stage that drops it without counting) shows."""

    @stage("lossy", ConcurrentParams, consumes=ProductBatch, produces=ProductBatch, per_item=True)
    async def lossy(batch: ProductBatch, params: ConcurrentParams, ctx: Any) -> ProductBatch | None:
        """Drops the second batch, uncounted."""
        return None if drop and batch.page == 5 else batch

    result = run("  out: {from: shop, pipe: [lossy, collect]}\n", batches("acme", copies=0), lossy)
    got = records(result, "acme")
    assert got["received"] == 10 and got["written"] == {"out": 5 if drop else 10}
    assert result.exit_code() == (1 if drop else 0)


@pytest.mark.parametrize("split", [False, True], ids=["fetch in the source's node", "fetch in a node of its own"])
def test_when_the_grace_runs_out_what_was_fetched_still_reaches_the_sink(split, tmp_path):
    """One page hangs for a minute; the run is stopped at 2 s with a 1 s
    grace, so its fetch must be cancelled. Cancelling upstream first, depth
    by depth, lets dedupe flush the 180 records it holds to the sink, in
    either layout, and the ledger balances: cut short, nothing unaccounted."""
    from aiohttp import web

    from flow.registry import Registry, default_registry
    from flow.runtime import Runtime
    from flow.spec import parse_spec
    from flow.testing import list_kinds, run_virtual
    from tests.loopback import PagedAPI

    async def main() -> tuple[Any, int]:
        api = PagedAPI("link", 200)
        answer = api.handle

        async def handle(request: web.Request) -> web.StreamResponse:
            if request.query.get("_page") == "4":
                await asyncio.sleep(60)  # one page hangs
            return await answer(request)

        api.handle = handle  # type: ignore[method-assign]
        url = await api.start()
        plan = f"{{paginate: {{url: '{url}', style: link}}}}, {{rate_limit: {{rate: 50/s}}}}"
        rest = "{fetch: {timeout: 30s}}, parse, {normalize: {preset: jsonserver, map: {category: category}}}"
        nodes = (f"  plan: {{pipe: [{plan}]}}\n  shop: {{from: plan, pipe: [{rest}]}}\n" if split
                 else f"  shop: {{pipe: [{plan}, {rest}]}}\n")  # fmt: skip
        text = (f"version: 1\nrun: {{deadline: 10m, grace: 1s}}\nnodes:\n{nodes}"
                "  products: {from: shop, pipe: [{dedupe: {key: id, hold: 200}}]}\n"
                "  out: {from: products, pipe: [testing_sink]}\n")  # fmt: skip
        sinks: dict[str, list[Any]] = {}
        registry = default_registry(plugins=False)
        kinds = Registry([registry[n] for n in registry.names()] + list_kinds({}, sinks))
        runtime = Runtime(parse_spec(text, kinds, env={}), out_dir=tmp_path)
        asyncio.get_running_loop().call_later(2.0, runtime.stop, "interrupted")
        try:
            result = await runtime.run()
        finally:
            await api.close()
        return result, sum(len(batch.products) for batch in sinks.get("out", []))

    result, out = run_virtual(main(), start=100.0)
    got = records(result, "plan" if split else "shop")
    assert result.status == "interrupted" and out == 180
    assert (got["received"], got["written"], got["unaccounted"]) == (180, {"out": 180}, {"out": 0})


@pytest.mark.loses_records
def test_a_loss_only_the_ledger_sees_makes_the_summary_partial(tmp_path):
    """A stage drops a batch without counting it: no error record says so,
    but the report's ledger does, and summary.json agrees with run.json."""
    import json

    @stage("lossy", ConcurrentParams, consumes=ProductBatch, produces=ProductBatch, per_item=True)
    async def lossy(batch: ProductBatch, params: ConcurrentParams, ctx: Any) -> ProductBatch | None:
        """Drops the second batch, uncounted."""
        return None if batch.page == 5 else batch

    kinds = [typed_source("products_of", ProductBatch, batches(copies=0)), lossy]
    text = ("version: 1\nnodes:\n  shop: {pipe: [products_of, lossy]}\n"
            "  report: {from: shop, pipe: [summary_json]}\n")  # fmt: skip
    result = run_graph(text, kinds=kinds, out_dir=tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert result.exit_code() == 1 and "source 'shop': 5 records unaccounted for at sink 'report'" in result.lost
    assert (summary["summary"]["status"], summary["summary"]["success_rate"]) == ("partial", 0.5)
    assert summary["per_source"]["shop"]["ledger"]["records"]["unaccounted"] == 5


def test_run_json_lists_a_bounded_sample_of_dead_letters_and_the_ledger_counts_all(tmp_path):
    """1,500 malformed records: run.json lists the first 1,000 (memory stays
    flat however many come), the ledger and the dead-letter sink have all."""
    from flow.context import DEAD_LETTER_SAMPLE
    from stages.records.items import Records

    pages = [Records.of("shop", page, [(i, {"id": i}) for i in range(100)]) for page in range(15)]  # no title, no price
    kinds = [typed_source("records_of", Records, pages)]
    text = ("version: 1\nnodes:\n  shop: {pipe: [records_of, {normalize: {preset: dummyjson}}]}\n"
            "  out: {from: shop, pipe: [collect]}\n"
            "  rejects: {from: shop.dead_letters, pipe: [{collect: {path: dead.jsonl}}]}\n")  # fmt: skip
    result = run_graph(text, kinds=kinds, out_dir=tmp_path)
    assert len(result.dead_letters) == DEAD_LETTER_SAMPLE == 1000
    assert records(result)["dead_letters"] == 1500 and records(result)["unaccounted"] == {"out": 0}
    assert len((tmp_path / "dead.jsonl").read_text().splitlines()) == 1500
