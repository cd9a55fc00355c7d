"""flow.placement: sources over shards. Sources sharing a named limiter or
a server always land together; every source lands once; the shards are
balanced as LPT promises; the same graph is placed the same way."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from flow.cli import main
from flow.placement import place_groups

SOURCES = st.lists(st.sampled_from("abcdefghijklmnop"), min_size=1, max_size=16, unique=True)


@st.composite
def graphs(draw: Any) -> tuple[list[str], dict[str, list[str]], int, dict[str, float]]:
    sources = draw(SOURCES)
    keys = {s: draw(st.lists(st.sampled_from(["limiter:x", "limiter:y", "host:h1", "host:h2", "host:h3"]),
                             max_size=2, unique=True)) for s in sources}  # fmt: skip
    weights = {s: float(draw(st.integers(1, 20))) for s in sources}
    return sources, keys, draw(st.integers(1, 6)), weights


@given(graphs())
def test_every_source_once_sharers_together_and_lpt_balance(graph):
    sources, keys, shards, weights = graph
    placement = place_groups(sources, keys, shards, weights)
    placed = [s for members in placement.shards for s in members]
    assert sorted(placed) == sorted(sources) and len(placement.shards) == shards
    for a in sources:
        for b in sources:
            if set(keys[a]) & set(keys[b]):
                assert placement.shard_of(a) == placement.shard_of(b), (a, b)
    loads = [sum(weights[s] for s in members) for members in placement.shards]
    heaviest_group = max(sum(weights[s] for s in g) for g in placement.groups)
    assert max(loads) <= min(loads) + heaviest_group  # LPT's bound
    assert place_groups(sources, keys, shards, weights) == placement  # deterministic


def test_a_chain_of_shared_keys_is_one_group():
    keys = {"a": ["limiter:x"], "b": ["limiter:x", "host:h"], "c": ["host:h"], "d": []}
    placement = place_groups(["a", "b", "c", "d"], keys, 2)
    assert placement.groups == [["a", "b", "c"], ["d"]]
    assert placement.shards == [["a", "b", "c"], ["d"]]


def test_validate_shows_the_placement_of_a_graph(tmp_path, capsys):
    (tmp_path / "g.yaml").write_text(
        "version: 1\nmocks: {m1: {style: platzi}, m2: {style: dummyjson}}\nnodes:\n"
        '  a: {pipe: [{paginate: {url: "${mocks.m1.url}/api/v1/products", style: offset}}, {rate_limit: {name: shared}},'
        " fetch, parse]}\n"
        '  b: {pipe: [{paginate: {url: "${mocks.m2.url}/products", style: skip_limit}}, {rate_limit: {name: shared}},'
        " fetch, parse]}\n"
        '  c: {pipe: [{paginate: {url: "${mocks.m1.url}/api/v1/products", style: offset}}, rate_limit, fetch, parse]}\n'
        '  d: {pipe: [{paginate: {url: "http://127.0.0.1:9/x", style: offset}}, rate_limit, fetch, parse]}\n'
        "  out: {from: [a, b, c, d], pipe: [merge, {collect: {path: x.jsonl}}]}\n"
    )
    assert main(["validate", str(tmp_path / "g.yaml"), "--shards", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert lines == ["  shard 0: a, b, c (together: limiter:shared, mock:m1)", "  shard 1: d"]  # no driver node
    assert main(["validate", str(tmp_path / "g.yaml"), "--shards", "3", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["placement"]["shards"] == [["a", "b", "c"], ["d"], []]


def test_plan_places_the_default_graph_by_predicted_time(capsys):
    from pathlib import Path

    graph = str(Path(__file__).parents[2] / "graph.yaml")
    assert main(["plan", graph, "--offline", "--shards", "2", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    seconds = {name: source["seconds"] for name, source in report["sources"].items()}
    slowest = max(seconds, key=seconds.__getitem__)
    shards = report["placement"]["shards"]
    assert sorted(s for members in shards for s in members) == sorted(seconds)
    assert [slowest] in shards  # the slowest source alone: the others together weigh about as much
    assert report["placement"]["driver"] == ["page"]  # report.html: written by the driver
