"""rate_limit: page requests pass on with a send budget attached, shared by name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from flow.problems import SpecError
from flow.registry import ANY, Params, default_registry, stage
from flow.spec import parse_spec
from flow.testing import run_graph
from stages.http.limiter import SlidingWindowLimiter
from stages.http.paging import PageRequest
from tests.stages.typed import typed_source


class _NoParams(Params):
    """No parameters."""


@stage("answered", _NoParams, consumes=PageRequest, produces=ANY)
async def answered(source: AsyncIterator[PageRequest], params: _NoParams, ctx: Any) -> AsyncIterator[Any]:
    """Stands in for fetch: takes the requests (nobody waits on them: no pager)."""
    async for request in source:
        yield request


def requests(n: int) -> list[PageRequest]:
    return [PageRequest("shop", "http://127.0.0.1/p", {"page": str(i)}, {}, i) for i in range(n)]


def run(graph: str, tmp_path: Any) -> tuple[Any, dict[str, list[Any]]]:
    sinks: dict[str, list[Any]] = {}
    kinds = [typed_source("requests", PageRequest, requests(3)), answered]
    return run_graph(graph, sinks=sinks, out_dir=tmp_path, kinds=kinds), sinks


def test_requests_pass_on_unchanged_but_for_their_limiter(tmp_path):
    graph = "version: 1\nnodes:\n  a: {pipe: [requests, {rate_limit: {rate: 10/2s, margin: 20ms}}, answered, testing_sink]}\n"
    result, sinks = run(graph, tmp_path)
    assert result.status == "completed"
    out = sinks["a"]
    assert [msgspec.structs.replace(r, limiter=None) for r in out] == requests(3)
    limiter = out[0].limiter
    assert isinstance(limiter, SlidingWindowLimiter)
    assert (limiter.name, limiter.rate, limiter.window, limiter.margin) == ("a", 10, 2.0, 0.02)
    assert all(r.limiter is limiter for r in out)


def test_nodes_naming_one_limiter_share_it_and_others_do_not(tmp_path):
    graph = (
        "version: 1\nnodes:\n"
        "  a: {pipe: [requests, {rate_limit: {rate: 5/s, name: host}}, answered, testing_sink]}\n"
        "  b: {pipe: [requests, {rate_limit: {rate: 5/s, name: host}}, answered, testing_sink]}\n"
        "  c: {pipe: [requests, {rate_limit: {rate: 5/s}}, answered, testing_sink]}\n"
    )
    result, sinks = run(graph, tmp_path)
    assert result.status == "completed"
    assert sinks["a"][0].limiter is sinks["b"][0].limiter
    assert sinks["a"][0].limiter.name == "host"
    assert sinks["c"][0].limiter is not sinks["a"][0].limiter


def test_one_limiter_name_with_two_budgets_does_not_validate():
    from flow.graph import check

    shop = "{pipe: [{paginate: {url: 'http://127.0.0.1:9/p', style: offset}}, {rate_limit: %s}, fetch, collect]}"
    graph = "version: 1\nnodes:\n" + "".join(
        f"  {node}: {shop % limit}\n"
        for node, limit in [
            ("a", "{rate: 5/s, name: host}"),
            ("b", "{rate: 9/s, name: host}"),
            ("c", "{rate: 5/s, name: host, margin: 0.2s}"),
            ("d", "{rate: 9/s}"),
        ]
    )
    spec = parse_spec(graph, default_registry(plugins=False), env={})
    assert [spec.where(p) for p in check(spec)] == [
        "graph.yaml:4:72: limiter 'host' is 9/s (margin 50ms) here but 5/s (margin 50ms) in node 'a'; a "
        "shared limiter has one budget; hint: give every use the same rate, margin, across_shards and store, or different names",
        "graph.yaml:5:72: limiter 'host' is 5/s (margin 200ms) here but 5/s (margin 50ms) in node 'a'; a "
        "shared limiter has one budget; hint: give every use the same rate, margin, across_shards and store, or different names",
    ]


@pytest.mark.parametrize(
    "rate,message",
    [
        ('"off"', "rate: 'off' is not a limit; remove the rate_limit stage instead"),
        ("off", "rate: 'off' is not a limit; remove the rate_limit stage instead"),  # YAML reads false
    ],
)
def test_rate_off_is_rejected_where_it_is_written(rate, message):
    text = f"version: 1\nnodes:\n  a:\n    pipe:\n      - rate_limit: {{rate: {rate}}}\n"
    with pytest.raises(SpecError) as caught:
        parse_spec(text, default_registry(plugins=False), env={})
    assert str(caught.value).startswith("graph.yaml:5:28: ")
    assert message in str(caught.value)
