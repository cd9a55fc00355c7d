"""paginate -> rate_limit -> fetch against live mock servers of every style,
on virtual time, judged by the servers' logs and ground truth."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flow.graph import check
from flow.registry import default_registry
from flow.runtime import Runtime
from flow.spec import parse_spec
from flow.testing import run_virtual
from mocks import STYLES, LoopClock, MockServer, ServerSpec, windows_over_limit

PAGINATION = {
    "dummyjson": ("/products", "skip_limit", "skip"),
    "platzi": ("/api/v1/products", "offset", "offset"),
    "reqres": ("/api/products", "page", "page"),
    "jsonserver": ("/products", "link", "_page"),
    "cursor": ("/items", "cursor", "cursor"),
}


def graph(style: str, page_size: int, rate: str = "5/s", retries: int = 3) -> str:
    path, pagination, _ = PAGINATION[style]
    headers = ', headers: {x-api-key: "reqres-free-v1"}' if style == "reqres" else ""
    return (
        f"version: 1\nrun: {{deadline: 10m}}\nmocks: {{shop: {{style: {style}}}}}\nnodes:\n"
        "  shop:\n    pipe:\n"
        f'      - paginate: {{url: "${{mocks.shop.url}}{path}", style: {pagination}, page_size: {page_size}{headers}}}\n'
        f"      - rate_limit: {{rate: {rate}}}\n"
        f"      - fetch: {{retry: {{retries: {retries}, backoff: 100ms, max: 1s}}, breaker: {{failures: 50}}}}\n"
        "  out: {from: shop, pipe: [collect]}\n"
    )


def run_graph(text: str, spec: ServerSpec, tmp_path: Any) -> tuple[Any, dict[str, Any]]:
    async def main() -> tuple[Any, dict[str, Any]]:
        async with MockServer(spec, clock=LoopClock()) as server:
            parsed = parse_spec(text, default_registry(plugins=False), env={}, refs={"shop": server.url})
            assert check(parsed) == []
            runtime = Runtime(parsed, out_dir=tmp_path)
            result = await runtime.run()
            return result, server.stats()

    return run_virtual(main(), start=10.0)


@pytest.mark.parametrize("style", STYLES)
def test_every_page_once_and_all_records_served(tmp_path, style):
    spec = ServerSpec(style=style, products=230, latency="5ms..80ms", seed=1)
    result, stats = run_graph(graph(style, 20), spec, tmp_path)
    assert (result.status, result.errors) == ("completed", [])
    served = stats["truth"]["served"]
    assert served["records"] == 230  # every record went out in a good page
    ok = [r for r in stats["requests"] if r["status"] == 200]
    position = PAGINATION[style][2]
    pages = Counter(r["query"].get(position, "") for r in ok)
    assert max(pages.values()) == 1  # no page fetched twice
    assert windows_over_limit([r["t"] for r in stats["requests"]], 5) == []
    assert result.nodes["out"].stages[-1].items_out == result.nodes["shop"].stages[-1].items_out


@pytest.mark.parametrize("style", STYLES)
def test_faults_are_retried_within_the_limit_and_every_page_accounted_for(tmp_path, style):
    spec = ServerSpec(style=style, products=300, error_rate=0.3, latency="10ms..400ms", seed=4)
    result, stats = run_graph(graph(style, 20), spec, tmp_path)
    times = [r["t"] for r in stats["requests"]]
    assert windows_over_limit(times, 5) == []  # retries included
    position = PAGINATION[style][2]
    attempts = Counter(r["query"].get(position, "") for r in stats["requests"])
    assert max(attempts.values()) <= 4
    assert sum(attempts.values()) > len(attempts)  # 30% errors: retries did happen
    fetched = result.nodes["shop"].stages[-1].items_out
    failed = [e for e in result.errors if e["stage"] == "fetch"]
    planned = result.nodes["shop"].stages[0].items_out
    assert fetched + len(failed) == planned  # every planned page: fetched, or an error record
    for error in failed:
        assert error["error"] == "http_500_after_retries" or error["error"].endswith("_after_retries")
        assert {"endpoint", "page", "attempts", "timestamp"} <= set(error)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(style=st.sampled_from(STYLES), products=st.integers(1, 400), page_size=st.integers(1, 60))
def test_any_catalogue_and_page_size_is_walked_exactly(tmp_path, style, products, page_size):
    spec = ServerSpec(style=style, products=products, max_page_size=100, page_size=min(20, page_size),
                      duplicate_rate=0.0)  # fmt: skip
    result, stats = run_graph(graph(style, page_size, rate="50/s"), spec, tmp_path)
    assert (result.status, result.errors) == ("completed", [])
    assert stats["truth"]["served"]["records"] == products
    ok = [r for r in stats["requests"] if r["status"] == 200]
    position = PAGINATION[style][2]
    assert max(Counter(r["query"].get(position, "") for r in ok).values()) == 1


ISOLATION = """\
version: 1
run: {deadline: 5m}
mocks: {a: {style: dummyjson}, b: {style: platzi}, dead: {style: reqres}}
x-fetch: &fetch
  fetch: {retry: {retries: 3, backoff: 0.5s, max: 8s}, breaker: {failures: 5, cooldown: 10s}}
nodes:
  a: {pipe: [{paginate: {url: "${mocks.a.url}/products", style: skip_limit}}, {rate_limit: {rate: 5/s}}, *fetch]}
  b: {pipe: [{paginate: {url: "${mocks.b.url}/api/v1/products", style: offset}}, {rate_limit: {rate: 5/s}}, *fetch]}
  dead:
    pipe:
      - paginate: {url: "${mocks.dead.url}/api/products", style: page, headers: {x-api-key: reqres-free-v1}}
      - rate_limit: {rate: 5/s}
      - *fetch
  out: {from: [a, b, dead], pipe: [merge, collect]}
"""


def test_a_dead_endpoint_does_not_slow_the_others(tmp_path):
    """Isolation: the same graph with the third endpoint healthy, then dead from
    the start (every connection reset); the other endpoints finish in the same
    time (virtual time: any coupling would be through shared limits, pools or
    breakers, which this would show), and the run still completes."""

    async def run(dead: bool) -> Any:
        specs = {
            "a": ServerSpec(style="dummyjson", products=300, latency="20ms..200ms", seed=1),
            "b": ServerSpec(style="platzi", products=300, latency="20ms..200ms", seed=2),
            "dead": ServerSpec(style="reqres", products=300, reset_rate=1.0 if dead else 0.0),
        }
        servers = {name: MockServer(spec, clock=LoopClock()) for name, spec in specs.items()}
        for server in servers.values():
            await server.start()
        try:
            urls = {name: server.url for name, server in servers.items()}
            parsed = parse_spec(ISOLATION, default_registry(plugins=False), env={}, refs=urls)
            return await Runtime(parsed, out_dir=tmp_path).run()
        finally:
            for server in servers.values():
                await server.close()

    healthy = run_virtual(run(False))
    broken = run_virtual(run(True))
    assert broken.status == "completed"
    for node in ("a", "b"):
        assert broken.nodes[node].seconds <= 1.05 * healthy.nodes[node].seconds
        assert broken.nodes[node].stages[-1].items_out == healthy.nodes[node].stages[-1].items_out
    errors = [e["error"] for e in broken.errors if e["node"] == "dead"]
    assert errors == ["connection_error_after_retries", "pagination_stopped"]
    assert broken.counters["dead"]["retry"] == 3 and broken.counters["dead"]["connection_error"] == 4


def test_breaker_transitions_are_events_and_the_endpoint_recovers(tmp_path):
    # The first page meets the outage: 3 failures open the breaker, probes
    # fail until the outage ends, then one succeeds and the rest follow.
    text = graph("dummyjson", 20, retries=8).replace(
        "breaker: {failures: 50}", "breaker: {failures: 3, cooldown: 1s}"
    )
    spec = ServerSpec(style="dummyjson", products=200, outages=["0s..2.5s"])
    result, stats = run_graph(text, spec, tmp_path)
    transitions = [(e["old"], e["new"]) for e in result.events if e["event"] == "breaker"]
    assert transitions[0] == ("closed", "open") and transitions[-1] == ("half_open", "closed")
    assert result.counters["shop"]["breaker_open"] >= 1
    assert result.errors == [] and stats["truth"]["served"]["records"] == 200


def test_offset_overshoot_is_bounded_and_counted(tmp_path):
    result, stats = run_graph(graph("platzi", 20), ServerSpec(style="platzi", products=150), tmp_path)
    overshoot = result.counters["shop"].get("overshoot", 0)
    assert 1 <= overshoot <= 4  # prefetch: at most 4 pages past the end, each counted
    ok = [r for r in stats["requests"] if r["status"] == 200]
    assert len(ok) == 8 + overshoot  # 150 products = 8 pages (the last short), plus the overshoot


@pytest.mark.parametrize("limit,pages", [("max_pages: 3", 3), ("max_items: 50", 3)])
def test_max_pages_and_max_items(tmp_path, limit, pages):
    text = graph("dummyjson", 20).replace("style: skip_limit,", f"style: skip_limit, {limit},")
    result, stats = run_graph(text, ServerSpec(style="dummyjson", products=500), tmp_path)
    assert result.nodes["shop"].stages[-1].items_out == pages
    assert stats["counts"]["requests"] == pages


def test_a_body_over_the_size_cap_is_an_error_not_retried(tmp_path):
    text = graph("dummyjson", 20).replace(
        "breaker: {failures: 50}", "breaker: {failures: 50}, max_bytes: 1000"
    )
    result, stats = run_graph(text, ServerSpec(style="dummyjson", products=40), tmp_path)
    fetch_errors = [(e["error"], e["attempts"]) for e in result.errors if e["stage"] == "fetch"]
    assert fetch_errors == [("body_too_large", 1)]
    assert [e["error"] for e in result.errors if e["stage"] == "paginate"] == ["pagination_stopped"]
    assert stats["counts"]["requests"] == 1  # page 0 too large: not retried; pagination stops


@pytest.mark.parametrize("stop_at", [0.5, 1.3, 2.7, 4.1])
def test_a_stopped_walk_counts_every_page_of_the_total_once(tmp_path, stop_at):
    """Stopped (Ctrl-C) part-way through a walk with a known total (50
    pages at 5/s): each page is planned (then fetched, failed or
    abandoned) or not attempted, never both, never neither."""

    async def main() -> tuple[Any, dict[str, Any]]:
        spec = ServerSpec(style="dummyjson", products=1000, seed=1)
        async with MockServer(spec, clock=LoopClock()) as server:
            parsed = parse_spec(graph("dummyjson", 20), default_registry(plugins=False), env={},
                                refs={"shop": server.url})  # fmt: skip
            runtime = Runtime(parsed, out_dir=tmp_path)
            asyncio.get_running_loop().call_later(stop_at, runtime.stop, "interrupted")
            return await runtime.run(), server.stats()

    result, stats = run_virtual(main(), start=10.0)
    pages = result.ledger["shop"]["pages"]
    assert result.status == "interrupted" and pages["unaccounted"] == 0
    assert pages["planned"] + pages["not_attempted"] == 50
    assert pages["fetched"] == len({str(r["query"]) for r in stats["requests"] if r["status"] == 200})


@pytest.mark.parametrize("limited", [True, False])
def test_only_requests_under_a_rate_limit_reach_the_on_wire_hook(tmp_path, monkeypatch, limited):
    """The fetch stage's sessions (stages.http.session.Sessions): pages behind
    a rate_limit stage are held to it on the wire, pages of no limiter skip
    the hook; both are fetched whole."""
    from stages.http import session as session_module

    hooked: list[Any] = []
    on_wire = session_module._on_wire

    async def counting(session: Any, context: Any, params: Any) -> None:
        hooked.append(context.trace_request_ctx.limiter)
        await on_wire(session, context, params)

    monkeypatch.setattr(session_module, "_on_wire", counting)
    text = graph("dummyjson", 20, rate="50/s")
    if not limited:
        text = text.replace("      - rate_limit: {rate: 50/s}\n", "")
    result, stats = run_graph(text, ServerSpec(style="dummyjson", products=100), tmp_path)
    assert result.status == "completed" and result.counters["shop"]["pages"] == 5
    assert len(hooked) == (len(stats["requests"]) if limited else 0) and len(stats["requests"]) >= 5
    assert all(limiter is not session_module.UNLIMITED for limiter in hooked)
