"""Servers flow has never seen, built to break it: a total header that is not
a number, a record nested 10,000 deep. Each ends in error records and a
whole node, never a lost source; judged by what the server served."""

from __future__ import annotations

import asyncio
import tempfile
from typing import Any

import pytest
from aiohttp import web

from flow.graph import check
from flow.registry import Registry, default_registry
from flow.runtime import Runtime
from flow.spec import parse_spec
from flow.testing import list_kinds, run_virtual
from tests import loopback

RECORDS = [{"id": n, "title": f"Lamp {n}", "price": 10 + n, "category": "lamps"} for n in range(45)]
DEEP = b"[" + b'{"a":' * 10_000 + b"1" + b"}" * 10_000 + b"]"


async def serve(
    pages: dict[int, bytes], headers: dict[str, str], position: str = "_page", past_end: int = 200
) -> tuple[web.AppRunner, str, list[int]]:
    """`GET /items?_page=N&_limit=20` (or `position=N`): the scripted body of
    page N; past the last page `[]`, or a 204 with no body."""
    served: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        page = int(request.query[position])
        served.append(page)
        if page not in pages and past_end == 204:
            return web.Response(status=204)
        return web.Response(body=pages.get(page, b"[]"), headers=headers, content_type="application/json")

    runner, base = await loopback.start("/items", handle)
    return runner, f"{base}/items", served


def run(
    pages: dict[int, bytes],
    headers: dict[str, str],
    style: str = "link",
    position: str = "_page",
    past_end: int = 200,
) -> tuple[Any, list[Any], list[int]]:
    sinks: dict[str, list[Any]] = {}

    async def main() -> tuple[Any, list[int]]:
        runner, url, served = await serve(pages, headers, position, past_end)
        try:
            text = (
                "version: 1\nrun: {deadline: 5m}\nnodes:\n"
                f"  shop: {{pipe: [{{paginate: {{url: '{url}', style: {style}}}}}, fetch, parse,"
                " {normalize: {preset: jsonserver, map: {category: category}}}, testing_sink]}\n"
            )
            registry = default_registry(plugins=False)
            kinds = [registry[n] for n in registry.names()] + list_kinds({}, sinks)
            spec = parse_spec(text, Registry(kinds), env={})
            assert [p for p in check(spec) if not p.warning] == []
            with tempfile.TemporaryDirectory() as out:
                return await Runtime(spec, out_dir=out).run(), served
        finally:
            await runner.cleanup()

    result, served = run_virtual(main())
    products = [p for batch in sinks.get("shop", []) for p in batch.products]
    return result, products, served


def pages_of(records: list[dict[str, Any]]) -> dict[int, bytes]:
    import msgspec

    return {n + 1: msgspec.json.encode(records[n * 20 : n * 20 + 20]) for n in range(3)}


def test_a_total_header_that_is_not_a_number_is_ignored_not_fatal():
    result, products, served = run(pages_of(RECORDS), {"X-Total-Count": "lots"})
    assert result.status == "completed" and result.errors == [] and result.lost == []
    assert sorted(int(p.source_id) for p in products) == list(range(45))  # every record served is out
    assert sorted(served)[:3] == [1, 2, 3]  # walked to the short page 3


def test_a_record_nested_10000_deep_costs_its_page_not_the_node():
    pages = pages_of(RECORDS)
    pages[2] = DEEP  # the second page is one record, too deep for any decoder
    result, products, served = run(pages, {"X-Total-Count": "45"})
    assert result.status == "completed"
    assert [(e["stage"], e["error"], e["page"]) for e in result.errors] == [("parse", "json_too_deep", 1)]
    assert sorted(int(p.source_id) for p in products) == [*range(20), *range(40, 45)]  # pages 1 and 3
    assert sorted(served) == [1, 2, 3]


async def redirector(routes: dict[str, tuple[int, str]]) -> tuple[web.AppRunner, str, list[tuple[float, str, str]]]:
    """Each path answers (status, Location) from `routes`, else 200 `[]`; the
    log holds (loop time, path, the x-api-key header or "")."""
    log: list[tuple[float, str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        log.append((asyncio.get_running_loop().time(), request.path, request.headers.get("x-api-key", "")))
        status, location = routes.get(request.path, (200, ""))
        headers = {"Location": location} if location else {}
        return web.Response(status=status, headers=headers, body=b"[]", content_type="application/json")

    runner, base = await loopback.start("/{tail:.*}", handle)
    return runner, base, log


def test_redirects_are_followed_within_the_limit_and_keys_stay_home():
    from mocks import windows_over_limit
    from stages.http.breaker import CircuitBreaker
    from stages.http.fetcher import Fetched, Fetcher, FetchFailed
    from stages.http.limiter import SlidingWindowLimiter
    from stages.http.retry import RetryPolicy
    from stages.http.session import make_session

    async def main() -> tuple[list[Any], list[Any], list[Any]]:
        other, other_url, other_log = await redirector({})
        home, home_url, home_log = await redirector(
            {"/loop": (302, "/loop"), "/same": (301, "/data"), "/away": (307, f"{other_url}/data")}
        )
        try:
            async with make_session() as session:
                fetcher = Fetcher(session, CircuitBreaker(failures=50), limiter=SlidingWindowLimiter(5, 1.0),
                                  policy=RetryPolicy(retries=0))  # hops are not retries  # fmt: skip
                key = {"x-api-key": "k3y"}
                results = [await fetcher.fetch(f"{home_url}{p}", headers=key) for p in ("/loop", "/same", "/away")]
        finally:
            await home.cleanup()
            await other.cleanup()
        return results, home_log, other_log

    (loop_, same, away), home_log, other_log = run_virtual(main())
    assert isinstance(loop_, FetchFailed) and loop_.error == "too_many_redirects"
    assert [path for _, path, _ in home_log].count("/loop") == 6  # the first request and 5 hops, no more
    assert isinstance(same, Fetched) and isinstance(away, Fetched)
    assert [(p, k) for _, p, k in home_log if p != "/loop"] == [("/same", "k3y"), ("/data", "k3y"), ("/away", "k3y")]
    assert [(p, k) for _, p, k in other_log] == [("/data", "")]  # the key did not cross to another origin
    times = sorted(t for t, _, _ in home_log + other_log)
    assert windows_over_limit(times, 5) == []  # every hop took a limiter slot


def test_page_style_over_bare_list_pages_walks_to_the_short_page():
    """`?page=N&per_page=20` answered with bare lists (no total): the walk
    goes on until a short page instead of stopping after the first."""
    result, products, served = run(pages_of(RECORDS), {}, style="page", position="page")
    assert result.status == "completed" and result.errors == [] and result.lost == []
    assert sorted(int(p.source_id) for p in products) == list(range(45))
    assert {1, 2, 3} <= set(served)


@pytest.mark.parametrize(("style", "path", "mock", "adapts"), [
    ("dummyjson", "/products", "skip_limit", True),   # skip offsets must follow the cap
    ("jsonserver", "/products", "link", True),        # X-Total-Count counts items
    ("reqres", "/api/products", "page", False),       # total_pages is counted in the server's pages
    ("platzi", "/api/v1/products", "offset", True),   # no total: the walk goes on at the served size
])  # fmt: skip
def test_a_server_that_caps_the_page_size_loses_nothing(tmp_path, style, path, mock, adapts):
    """Asked for 150 a page, the server serves at most 100 and says how many it
    holds: flow adapts its plan to 100 a page where its plan depends on it,
    records the event, and every record the server holds comes out once (the
    server's ground truth)."""
    from mocks import LoopClock, MockServer, ServerSpec

    headers = ', headers: {x-api-key: "reqres-free-v1"}' if style == "reqres" else ""
    graph = (
        "version: 1\nrun: {deadline: 5m}\nnodes:\n"
        f'  shop: {{pipe: [{{paginate: {{url: "${{mocks.shop.url}}{path}", style: {mock}, page_size: 150{headers}}}}},'
        f" fetch, {{parse: {{schema: {style}}}}}, {{normalize: {{preset: {style}}}}}, collect]}}\n"
    )
    spec_server = ServerSpec(style=style, products=430, max_page_size=100, page_size=20, duplicate_rate=0.0,
                             defect_rate=0.0, rate_limit="off")  # fmt: skip

    async def main() -> tuple[Any, dict[str, Any]]:
        async with MockServer(spec_server, clock=LoopClock()) as server:
            spec = parse_spec(graph, default_registry(plugins=False), env={}, refs={"shop": server.url})
            assert check(spec) == []
            return await Runtime(spec, out_dir=tmp_path).run(), server.stats()

    result, stats = run_virtual(main())
    assert result.status == "completed" and result.errors == [] and result.lost == []
    assert stats["truth"]["served"]["records"] == 430  # every record went out once, in a good page
    assert result.counters["shop"]["products"] == 430
    capped = [(e["asked"], e["served"]) for e in result.events if e["event"] == "page_size_capped"]
    assert capped == ([(150, 100)] if adapts else [])


def test_a_server_that_ignores_paging_is_caught_not_walked_to_the_deadline():
    """Every page answers the same 45 records: the walk stops at the first
    repeat with one error, instead of planning pages until the deadline."""
    import msgspec

    same = msgspec.json.encode(RECORDS)
    result, products, served = run(dict.fromkeys(range(0, 100_000, 20), same), {}, style="offset", position="offset")
    assert result.status == "completed"
    assert [e["error"] for e in result.errors] == ["paging_ignored"]
    assert len(served) <= 1 + 4 + 4  # the first page, the prefetch, and answers in flight
    assert sorted({int(p.source_id) for p in products}) == list(range(45))


def test_a_duplicate_record_on_a_one_record_page_is_not_ignored_paging(tmp_path):
    """Pages of one record: a duplicate record is a page with an earlier
    page's records, and still not a server that ignores paging."""
    from mocks import LoopClock, MockServer, ServerSpec

    graph = (
        "version: 1\nrun: {deadline: 10m}\nnodes:\n"
        '  shop: {pipe: [{paginate: {url: "${mocks.shop.url}/api/v1/products", style: offset, page_size: 1}},'
        " fetch, {parse: {schema: platzi}}, collect]}\n"
    )
    spec_server = ServerSpec(style="platzi", products=120, duplicate_rate=0.1, rate_limit="off")

    async def main() -> tuple[Any, dict[str, Any]]:
        async with MockServer(spec_server, clock=LoopClock()) as server:
            spec = parse_spec(graph, default_registry(plugins=False), env={}, refs={"shop": server.url})
            return await Runtime(spec, out_dir=tmp_path).run(), server.stats()

    result, stats = run_virtual(main())
    assert stats["truth"]["served"]["duplicates"]  # the server did repeat records
    assert result.errors == [] and result.counters["shop"]["records"] == 120


def test_a_204_past_the_end_is_an_empty_page_not_a_failure():
    pages = {offset: msgspec_encode(RECORDS[offset : offset + 20]) for offset in (0, 20, 40)}
    result, products, served = run(pages, {}, style="offset", position="offset", past_end=204)
    assert result.status == "completed" and result.errors == [] and result.lost == []
    assert sorted(int(p.source_id) for p in products) == list(range(45))
    assert len(served) <= 3 + 4  # the pages and the prefetch past the end: no retries of the 204s


def msgspec_encode(value: Any) -> bytes:
    import msgspec

    return msgspec.json.encode(value)


def test_max_items_counts_in_the_page_size_the_server_serves(tmp_path):
    from mocks import LoopClock, MockServer, ServerSpec

    graph = (
        "version: 1\nrun: {deadline: 10m}\nnodes:\n"
        '  shop: {pipe: [{paginate: {url: "${mocks.shop.url}/products", style: skip_limit, page_size: 50,'
        " max_items: 90}}, fetch, {parse: {schema: dummyjson}}, collect]}\n"
    )
    spec_server = ServerSpec(style="dummyjson", products=200, max_page_size=30, page_size=20, rate_limit="off")

    async def main() -> Any:
        async with MockServer(spec_server, clock=LoopClock()) as server:
            spec = parse_spec(graph, default_registry(plugins=False), env={}, refs={"shop": server.url})
            return await Runtime(spec, out_dir=tmp_path).run()

    result = run_virtual(main())
    assert result.errors == [] and result.counters["shop"]["records"] == 90  # 3 pages of 30, not 2


def test_a_source_that_dies_after_its_first_page_counts_everything_it_held(tmp_path):
    """A total of 1,000 records, then every page fails: the walk gives up, and
    success_rate counts the failed pages and the pages never asked for, at the
    page size: 20 of 1,000 made it, not 20 of 100."""
    import json

    async def main() -> Any:
        async def handle(request: web.Request) -> web.Response:
            if request.query["_page"] != "1":
                return web.Response(status=503)
            return web.Response(body=msgspec_encode(RECORDS[:20]), headers={"X-Total-Count": "1000"},
                                content_type="application/json")  # fmt: skip

        runner, base = await loopback.start("/items", handle)
        url = f"{base}/items"
        graph = (
            "version: 1\nrun: {deadline: 10m}\nnodes:\n"
            f"  shop: {{pipe: [{{paginate: {{url: '{url}', style: link}}}}, {{fetch: {{retry: {{retries: 0}}}}}},"
            " parse, {normalize: {preset: jsonserver, map: {category: category}}}]}\n"
            "  report: {from: [shop, shop.errors], pipe: [summary_json]}\n"
        )
        try:
            spec = parse_spec(graph, default_registry(plugins=False), env={})
            return await Runtime(spec, out_dir=tmp_path).run()
        finally:
            await runner.cleanup()

    result = run_virtual(main())
    report = json.loads((tmp_path / "summary.json").read_text())
    summary = report["summary"]
    pages = report["per_source"]["shop"]["ledger"]["pages"]
    assert pages["fetched"] == 1 and pages["failed"] > 0 and pages["unaccounted"] == 0  # every page ended somewhere
    assert "pagination_stopped" in [e["error"] for e in result.errors]
    assert (summary["total_products"], summary["success_rate"], summary["status"]) == (20, 0.02, "partial")
