"""`flow plan`: its predictions against runs of the same graph on virtual
time, judged at the mock servers; nothing fetched beyond the first
requests, nothing at all offline; located failures and exit codes."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import mocks
from flow.cli import main
from flow.plan import SourcePlan, predict
from flow.registry import default_registry
from flow.runtime import Runtime
from flow.spec import load_spec
from flow.testing import run_virtual
from mocks import LoopClock, ServerSpec

DEFAULT_GRAPH = Path(__file__).parents[2] / "graph.yaml"
SOURCES = ("shop_a", "shop_b", "shop_c")


def plan(capsys: Any, *args: str) -> tuple[int, dict[str, Any], str]:
    """`flow plan ARGS --format json`: (exit code, the plan, stderr)."""
    code = main(["plan", *args, "--format", "json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def run_measured(path: Path, tmp_path: Path, monkeypatch: Any, seed: int) -> tuple[Any, dict[str, Any]]:
    """The graph run on virtual time against its mocks (on the loop's clock),
    the fetch's retry jitter seeded: (the result, each server's stats)."""
    import stages.http.fetch as fetch_module

    monkeypatch.setattr(fetch_module, "random", types.SimpleNamespace(Random=lambda: random.Random(seed)))

    async def main_() -> tuple[Any, dict[str, Any]]:
        registry = default_registry(plugins=False)
        spec = load_spec(path, registry, mocks_type=ServerSpec)
        async with mocks.serve(spec.mocks, clock=LoopClock()) as servers:
            refs = {name: server.url for name, server in servers.items()}
            spec = load_spec(path, registry, mocks_type=ServerSpec, refs=refs)
            result = await Runtime(spec, out_dir=tmp_path / f"out{seed}").run()
            return result, {name: server.stats(summary=True) for name, server in servers.items()}

    return run_virtual(main_())


def test_the_default_graph_is_predicted_within_15_percent_and_names_its_binding_limit(
    capsys, tmp_path, monkeypatch
):
    """The plan (offline: from the mocks' declarations alone) against the
    default graph run on virtual time, each source's time measured from
    the run's start to its node's end. Retry backoffs are drawn (full
    jitter), so the run is seeded; a few seeds must also fall within the
    range the plan gives for them."""
    code, planned, _ = plan(capsys, str(DEFAULT_GRAPH), "--offline")
    assert code == 0 and planned["requests_made"] == 0
    for seed in range(4):
        result, stats = run_measured(DEFAULT_GRAPH, tmp_path, monkeypatch, seed)
        assert result.status == "completed"
        for name in SOURCES:
            source, measured = planned["sources"][name], result.nodes[name].seconds
            assert source["requests"]["run"] == stats[name]["counts"]["requests"]  # retries, overshoot included
            low, high = source["range"]
            assert 0.97 * low <= measured <= 1.03 * high, (name, seed, measured, source["range"])
            if seed == 0:
                assert abs(source["seconds"] - measured) <= 0.15 * measured, (name, measured, source["seconds"])
                assert source["binding"] == "rate limit 5/s"
    slowest = max(SOURCES, key=lambda name: planned["sources"][name]["seconds"])
    assert planned["seconds"]["slowest"] == slowest and planned["deadline"]["met"] is True


@contextlib.asynccontextmanager
async def _recording(found: dict[str, Any], serve: Any, specs: Any, **options: Any) -> Any:
    async with serve(specs, **options) as servers:
        found.update(servers)
        yield servers


def test_nothing_beyond_the_first_request_is_fetched(capsys, monkeypatch):
    """Judged by the mock servers' own logs: one request each, for page 0."""
    found: dict[str, Any] = {}
    serve = mocks.serve
    monkeypatch.setattr(mocks, "serve", lambda specs, **o: _recording(found, serve, specs, **o))
    code, planned, _ = plan(capsys, str(DEFAULT_GRAPH))
    assert code == 0 and sorted(found) == list(SOURCES)
    first = {"shop_a": {"skip": "0", "limit": "20"}, "shop_b": {"offset": "0", "limit": "20"},
             "shop_c": {"page": "1", "per_page": "20"}}  # fmt: skip
    for name, server in found.items():
        assert [r["query"] for r in server.stats()["requests"]] == [first[name]]
    assert planned["requests_made"] == 3
    offline = plan(capsys, str(DEFAULT_GRAPH), "--offline")[1]
    for name in SOURCES:  # the mocks' draws, not the first request's latency, time the walk
        assert planned["sources"][name]["seconds"] == offline["sources"][name]["seconds"]
        assert planned["sources"][name]["latency"]["first"] > 0


_connecting: list[Any] = []
_watching = False


def _audit(event: str, args: Any) -> None:
    if _watching and event in ("socket.connect", "socket.bind", "socket.getaddrinfo"):
        _connecting.append((event, args[1:]))


def test_offline_makes_no_request_and_starts_no_mock(capsys, monkeypatch):
    global _watching
    monkeypatch.setattr(mocks, "serve", lambda *a, **o: pytest.fail("a mock was started"))
    if _audit not in getattr(sys, "_flow_plan_hooks", []):
        sys.addaudithook(_audit)  # hooks cannot be removed: this one only listens while _watching
        sys._flow_plan_hooks = [_audit]  # type: ignore[attr-defined]
    _connecting.clear()
    _watching = True
    try:
        code, planned, _ = plan(capsys, str(DEFAULT_GRAPH), "--offline")
    finally:
        _watching = False
    assert code == 0 and _connecting == [] and planned["requests_made"] == 0
    assert planned["offline"] is True and planned["seconds"]["run"] > 0


AUTO = """\
version: 1
run: {deadline: 1m}
mocks:
  json: {style: jsonserver, products: 100, latency: 20ms}
  dummy: {style: dummyjson, products: 90, latency: 20ms}
  list: {style: platzi, products: 70, latency: 20ms}
nodes:
  json: {pipe: [{paginate: {url: "${mocks.json.url}/products", style: auto}}, rate_limit, fetch]}
  dummy: {pipe: [{paginate: {url: "${mocks.dummy.url}/products", style: auto}}, rate_limit, fetch]}
  list: {pipe: [{paginate: {url: "${mocks.list.url}/api/v1/products", style: auto}}, rate_limit, fetch]}
  out: {from: [json, dummy, list], pipe: [merge, collect]}
"""


def test_style_auto_says_what_it_detected_and_counts_its_probes(capsys, tmp_path, monkeypatch):
    path = tmp_path / "auto.yaml"
    path.write_text(AUTO)
    found: dict[str, Any] = {}
    serve = mocks.serve
    monkeypatch.setattr(mocks, "serve", lambda specs, **o: _recording(found, serve, specs, **o))
    code, planned, _ = plan(capsys, str(path))
    assert code == 0
    sources = planned["sources"]
    assert (sources["json"]["style"], sources["dummy"]["style"], sources["list"]["style"]) == (
        "link", "skip_limit", "offset")  # fmt: skip
    assert sources["json"]["detected"].startswith("style link, from a Link header")
    assert sources["list"]["detected"].startswith("style offset, from a bare list")
    for name, server in found.items():  # the probes are the only requests, each counted
        assert len(server.stats()["requests"]) == sources[name]["requests"]["planning"]
        assert sources[name]["requests"]["probes"] == sources[name]["requests"]["planning"]
    offline = plan(capsys, str(path), "--offline")[1]["sources"]
    assert offline["list"]["detected"].startswith("style offset, as the mock list serves it")
    for name in sources:  # offline: the probes such a server needs, assumed
        assert offline[name]["requests"]["run"] == sources[name]["requests"]["run"]
        assert offline[name]["seconds"] == pytest.approx(sources[name]["seconds"])
    monkeypatch.undo()
    result, stats = run_measured(path, tmp_path, monkeypatch, 0)
    for name in sources:  # the run: the probes, then the walk, as planned
        assert sources[name]["requests"]["run"] == stats[name]["counts"]["requests"]
        assert abs(sources[name]["seconds"] - result.nodes[name].seconds) <= 0.15 * result.nodes[name].seconds


SLOW = """\
version: 1
run: {deadline: 10s}
mocks:
  shop: {style: dummyjson, products: 4000, latency: 20ms}
nodes:
  shop:
    pipe:
      - paginate: {url: "${mocks.shop.url}/products", style: skip_limit, page_size: 20}
      - rate_limit: {rate: 1/s}
      - fetch
  out: {from: shop, pipe: [collect]}
"""


def test_a_deadline_the_run_cannot_meet_is_a_warning(capsys, tmp_path):
    path = tmp_path / "slow.yaml"
    path.write_text(SLOW)
    code, planned, err = plan(capsys, str(path), "--offline")
    source = planned["sources"]["shop"]
    assert code == 0 and source["pages"] == 200 and source["binding"] == "rate limit 1/s"
    assert 199 * 1.0 <= source["seconds"] <= 199 * 1.05 + 0.1  # 199 windows of 1 s + the 50 ms margin
    assert planned["deadline"] == {"seconds": 10.0, "met": False}
    assert planned["warnings"] and planned["warnings"][0].startswith("the run needs ~209.0 s")
    assert err.startswith("flow: warning: the run needs ~209.0 s but run.deadline is 10 s (shop ~209.0 s")


def test_a_dead_endpoint_fails_the_plan_located(capsys, tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = tmp_path / "dead.yaml"
    path.write_text(
        "version: 1\nnodes:\n  shop:\n    pipe:\n"
        f'      - paginate: {{url: "http://127.0.0.1:{port}/products", style: skip_limit}}\n'
        "      - fetch: {retry: {retries: 1, backoff: 10ms}}\n"
        "  out: {from: shop, pipe: [collect]}\n"
    )
    assert main(["plan", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(
        f"{path}:5:9: source 'shop': the first request GET http://127.0.0.1:{port}/products?limit=20&skip=0 "
        "failed: ClientConnectorError"
    )
    assert captured.err.rstrip().endswith("(2 attempts)")
    assert "shop: the first request failed (below)" in captured.out


def test_an_invalid_graph_exits_2(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nnodes:\n  shop: {pipe: [{paginate: {url: ftp://x, style: page}}, fetch]}\n")
    assert main(["plan", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"{path}:3:")


def test_the_json_has_per_source_fields(capsys):
    code, planned, _ = plan(capsys, str(DEFAULT_GRAPH), "--offline")
    assert code == 0
    assert set(planned) >= {"file", "offline", "requests_made", "sources", "seconds", "deadline", "warnings"}
    for source in planned["sources"].values():
        assert set(source) >= {"style", "pages", "pages_from", "requests", "latency", "seconds", "range",
                               "binding", "limits", "notes", "failure"}  # fmt: skip
        kinds = [limit["kind"] for limit in source["limits"]]
        assert kinds == ["rate", "concurrency", "server"]
        rate = source["limits"][0]
        assert rate["busiest_window"] <= rate["allowed"]  # never more than the limit in a window


def walk(name: str, pages: int, latency: float, *, rate: Any = None, concurrency: int = 4,
         walk: str = "total") -> SourcePlan:  # fmt: skip
    plan = SourcePlan(name, offline=True, pages=pages, latency=latency, walk=walk, concurrency=concurrency)
    plan.rate = rate
    return plan


def budget(name: str, count: int) -> Any:
    from flow.plan import RateBudget
    from stages.http.limiter import SlidingWindowLimiter

    return RateBudget(name, count, 1.0, 0.05, lambda: SlidingWindowLimiter(count, 1.0, margin=0.05))


def test_the_binding_limit_is_the_one_whose_removal_shortens_the_walk_most():
    # 41 pages of 1 s at concurrency 4, 100/s: page 0, then 10 rounds of 4.
    by_concurrency = walk("slow", 41, 1.0, rate=budget("slow", 100))
    # 10 pages of 0.5 s by cursor: strictly one after the other.
    cursor = walk("cursor", 10, 0.5, walk="cursor")
    # Two sources of 11 fast pages sharing one 5/s limiter: 22 sends, 5 a window.
    shared = budget("api", 5)
    a, b = walk("a", 11, 0.01, rate=shared), walk("b", 11, 0.01, rate=shared)
    found = predict([by_concurrency, cursor, a, b])
    assert found["slow"].binding == "concurrency 4 \N{MULTIPLICATION SIGN} 1000 ms latency"
    assert found["slow"].seconds == pytest.approx(11.0)
    assert found["cursor"].binding == "sequential cursor walk"
    assert found["cursor"].seconds == pytest.approx(5.0)
    assert found["a"].binding == "shared limiter api (5/s across a, b)"
    assert max(found["a"].seconds, found["b"].seconds) == pytest.approx(4 * 1.05 + 0.01, abs=0.02)
