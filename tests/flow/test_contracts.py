"""The contracts between the engine and its stages, tried the way a user
would break them: a graph that validates runs, and one that would not run
does not validate."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flow.graph import check
from flow.registry import default_registry
from flow.runtime import Runtime
from flow.spec import parse_spec
from flow.testing import run_virtual
from mocks import LoopClock, MockServer, ServerSpec, windows_over_limit

REGISTRY = default_registry(plugins=False)

SPLIT = """\
version: 1
run: {deadline: 10m}
mocks: {shop: {style: platzi}}
nodes:
  plan:
    pipe:
      - paginate: {url: "${mocks.shop.url}/api/v1/products", style: offset, page_size: 20}
      - rate_limit: {rate: 5/s}
  get:
    from: plan
    pipe:
      - fetch: {concurrency: 8, retry: {retries: 3, backoff: 100ms, max: 1s}, breaker: {failures: 50}}
      - parse: {schema: platzi}
      - normalize: {preset: platzi}
      - summary_json
"""


def test_a_planner_and_its_fetch_in_different_nodes_fetch_every_page_within_the_rate(tmp_path):
    """paginate + rate_limit in one node, fetch in the node reading it: the
    requests carry their planner and their limiter across the edge."""
    spec_server = ServerSpec(style="platzi", products=230, latency="5ms..80ms", error_rate=0.1, seed=2,
                             duplicate_rate=0.0, defect_rate=0.0)  # fmt: skip

    async def main() -> tuple[Any, dict[str, Any]]:
        async with MockServer(spec_server, clock=LoopClock()) as server:
            spec = parse_spec(SPLIT, REGISTRY, env={}, refs={"shop": server.url})
            assert check(spec) == []
            result = await Runtime(spec, out_dir=tmp_path).run()
            return result, server.stats()

    result, stats = run_virtual(main(), start=10.0)
    assert result.status == "completed"
    served = stats["truth"]["served"]
    report = json.loads((tmp_path / "summary.json").read_text())
    assert sorted(p["source_id"] for p in report["products"]) == sorted(map(str, served["valid"]))
    assert len(served["valid"]) == 230  # every record reached the output
    assert windows_over_limit([r["t"] for r in stats["requests"]], 5) == []  # retries included
    assert sum(r["status"] != 200 for r in stats["requests"]) > 0  # faults happened and were retried
    planned = result.nodes["plan"].stages[0].items_out
    assert result.counters["plan"]["pages"] == planned and result.errors == []  # every page fetched
    # The source's ledger is kept under the source, whichever node counted it.
    ledger = report["per_source"]["plan"]
    assert (ledger["pages"], ledger["records"], ledger["products"]) == (planned, 230, 230)
    balance = ledger["ledger"]
    assert balance["pages"] == {
        "planned": planned,
        "fetched": planned,
        "from_state": 0,
        "failed": 0,
        "failed_by_reason": {},
        "abandoned": 0,
        "not_attempted": 0,
        "unaccounted": 0,
    }
    assert balance["records"]["unaccounted"] == 0 and balance["records"]["written"] == 230
    # run.json has the same ledger, with what each record sink wrote.
    assert result.ledger["plan"]["pages"] == balance["pages"]
    assert result.ledger["plan"]["records"] == {
        "received": 230, "dead_letters": 0, "duplicates": 0, "filtered": 0,
        "expected": {"get": 230}, "written": {"get": 230}, "unaccounted": {"get": 0},
    }  # fmt: skip
    assert "get" not in result.counters


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "version: 1\nnodes:\n  a: {pipe: [sequence, {normalize: {preset: dummyjson}}, summary_json]}\n",
            "graph.yaml:3:24: stage 'normalize' consumes Records but 'sequence' before it produces list; "
            "hint: 'normalize' cannot take list",
            id="sequence-into-normalize",
        ),
        pytest.param(
            "version: 1\nnodes:\n  a: {pipe: [sequence]}\n  b: {from: a, pipe: [{normalize: {preset: dummyjson}}, summary_json]}\n",
            "graph.yaml:4:23: stage 'normalize' consumes Records but 'a' before it produces list; "
            "hint: 'normalize' cannot take list",
            id="across-an-edge",
        ),
        pytest.param(
            "version: 1\nnodes:\n  a: {pipe: [{paginate: {url: 'http://127.0.0.1:9/x', style: offset}}, collect]}\n",
            "graph.yaml:3:72: stage 'collect' would drop PageRequest, whose planner waits for their answers; "
            "hint: answer them first: put a 'fetch' stage before it",
            id="requests-into-a-generic-sink",
        ),
        pytest.param(
            "version: 1\nnodes:\n  a: {pipe: [{paginate: {url: 'http://127.0.0.1:9/x', style: offset}}, rate_limit]}\n",
            "graph.yaml:3:13: node 'a' ends with PageRequest that nothing answers; their planner would wait "
            "for the answers until the deadline; hint: add a 'fetch' stage, here or in a node reading from it",
            id="requests-nobody-fetches",
        ),
        pytest.param(
            "version: 1\nnodes:\n  a: {pipe: [sequence]}\n  b: {from: a.windows, pipe: [collect]}\n",
            "graph.yaml:4:13: node 'a' has no side output 'windows'; hint: it has a.errors, a.dead_letters",
            id="a-port-the-node-lacks",
        ),
        pytest.param(
            "version: 1\nnodes:\n  a: {pipe: [sequence, collect]}\n  b: {from: a.errors, pipe: [{normalize: {preset: dummyjson}}, collect]}\n",
            "graph.yaml:4:30: stage 'normalize' consumes Records but 'a.errors' before it produces ErrorRecord; "
            "hint: 'normalize' cannot take ErrorRecord",
            id="side-output-kinds-are-checked",
        ),
    ],
)
def test_a_graph_that_cannot_run_does_not_validate(text, message):
    spec = parse_spec(text, REGISTRY, env={})
    problems = [spec.where(p) for p in check(spec) if not p.warning]
    assert problems == [message]


def test_wildcards_read_every_upstream_node_and_never_form_a_cycle():
    from flow.graph import edges

    text = (
        "version: 1\nnodes:\n  a: {pipe: [sequence]}\n  b: {from: a, pipe: [merge]}\n"
        "  report: {from: [b, b.dead_letters, '*.errors'], pipe: [collect]}\n"
        "  log: {from: '*.errors', pipe: [collect]}\n"
    )
    spec = parse_spec(text, REGISTRY, env={})
    assert [p for p in check(spec) if not p.warning] == []
    wiring = {name: [str(e) for e in found] for name, found in edges(spec).items()}
    # Wildcard readers take every other node's errors, not each other's.
    assert wiring["report"] == ["b", "b.dead_letters", "a.errors", "b.errors"]
    assert wiring["log"] == ["a.errors", "b.errors"]


FAILING_FETCH_NODE = """\
version: 1
run: {deadline: 10m}
mocks: {shop: {style: platzi}}
nodes:
  plan:
    pipe:
      - paginate: {url: "${mocks.shop.url}/api/v1/products", style: offset, page_size: 20, prefetch: 4}
      - rate_limit: {rate: 5/s}
  get:
    from: plan
    pipe:
      - fetch: {concurrency: 4}
      - explode: {after: 2}
      - collect
"""


def test_requests_dropped_by_a_failing_branch_release_their_planner(tmp_path):
    """The fetch node's branch fails after two pages: the requests it then
    drops are reported to the planner as failed, which stops paginating, so
    the run completes instead of waiting out its deadline."""
    from collections.abc import AsyncIterator

    from flow.registry import ANY, SAME, Params, Registry, stage

    class ExplodeParams(Params):
        after: int

    @stage("explode", ExplodeParams, consumes=ANY, produces=SAME)
    async def explode(source: AsyncIterator[Any], params: ExplodeParams, ctx: Any) -> AsyncIterator[Any]:
        """Pass `after` items on, then raise."""
        n = 0
        async for item in source:
            if n == params.after:
                raise RuntimeError("the branch broke")
            n += 1
            yield item

    registry = Registry([REGISTRY[name] for name in REGISTRY.names()] + [explode])

    async def main() -> tuple[Any, float]:
        async with MockServer(ServerSpec(style="platzi", products=400), clock=LoopClock()) as server:
            spec = parse_spec(FAILING_FETCH_NODE, registry, env={}, refs={"shop": server.url})
            assert check(spec) == []
            loop = __import__("asyncio").get_running_loop()
            started = loop.time()
            result = await Runtime(spec, out_dir=tmp_path).run()
            return result, loop.time() - started

    result, took = run_virtual(main(), start=10.0)
    assert result.status == "completed" and took < 60  # not the 10-minute deadline
    errors = [(e["node"], e["error"]) for e in result.errors]
    assert ("get", "RuntimeError") in errors and ("plan", "pagination_stopped") in errors
    assert result.nodes["get"].dropped > 0


def test_a_warning_does_not_switch_the_kind_checks_off():
    text = (
        "version: 1\nnodes:\n"
        "  a: {buffer: 4, pipe: [sequence]}\n"  # a buffer on a source: a warning
        "  b: {from: a, pipe: [{normalize: {preset: dummyjson}}, summary_json]}\n"
    )
    spec = parse_spec(text, REGISTRY, env={})
    problems = check(spec)
    assert [p.warning for p in problems] == [True, False]
    assert "stage 'normalize' consumes Records" in problems[1].message
