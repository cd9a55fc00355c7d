"""sequence: `items` numbered records from the node, in batches of `batch`."""

from __future__ import annotations

from typing import Any

import pytest

from flow.testing import run_graph


def sequence(params: str, tmp_path: Any) -> list[Any]:
    sinks: dict[str, list[Any]] = {}
    run_graph(
        f"version: 1\nnodes:\n  nums: {{pipe: [{params}, testing_sink]}}\n", sinks=sinks, out_dir=tmp_path
    )
    return sinks["nums"]


def test_batches_of_numbered_records_named_after_the_node(tmp_path):
    assert sequence("{sequence: {items: 5, batch: 2}}", tmp_path) == [
        [{"source": "nums", "n": 0}, {"source": "nums", "n": 1}],
        [{"source": "nums", "n": 2}, {"source": "nums", "n": 3}],
        [{"source": "nums", "n": 4}],
    ]


def test_defaults_are_100_records_in_batches_of_20(tmp_path):
    batches = sequence("sequence", tmp_path)
    assert [len(b) for b in batches] == [20] * 5
    assert [r["n"] for b in batches for r in b] == list(range(100))


@pytest.mark.parametrize("items,batch,sizes", [(0, 3, []), (3, 10, [3]), (6, 3, [3, 3]), (7, 1, [1] * 7)])
def test_batch_sizes(tmp_path, items, batch, sizes):
    assert [len(b) for b in sequence(f"{{sequence: {{items: {items}, batch: {batch}}}}}", tmp_path)] == sizes
