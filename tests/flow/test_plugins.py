"""A stage kind from another installed distribution (tests/plugin) is found
through the `flow.stages` entry points and runs like a built-in one."""

from __future__ import annotations

from flow.registry import default_registry
from flow.testing import run_graph


def test_an_installed_distribution_adds_a_stage_kind():
    registry = default_registry()
    assert "stamp" in registry
    assert registry["stamp"].origin == "flow-example-stages"
    assert registry["merge"].origin == "flow"
    assert "stamp" not in default_registry(plugins=False)  # flow's own kinds only


def test_the_third_party_kind_runs_in_a_graph(tmp_path):
    sinks: dict[str, list] = {}
    result = run_graph(
        "version: 1\nnodes:\n"
        "  a: {pipe: [{sequence: {items: 7, batch: 3}}, {stamp: {value: ok}}, testing_sink]}\n",
        sinks=sinks,
        plugins=True,
        out_dir=tmp_path,
    )
    assert result.status == "completed" and result.errors == []
    records = [record for batch in sinks["a"] for record in batch]
    assert [(r["n"], r["stamp"]) for r in records] == [(n, "ok") for n in range(7)]
    assert result.counters["a"]["stamped"] == 7
