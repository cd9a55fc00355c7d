"""merge: every item of every input node, each input's order kept."""

from __future__ import annotations

import re
from typing import Any

import pytest

from flow.testing import run_graph
from stages.records.items import ProductBatch
from tests.stages.typed import typed_source

GRAPH = """\
version: 1
nodes:
  a: {pipe: [{testing_source: {name: a}}]}
  b: {pipe: [{testing_source: {name: b}}]}
  c: {pipe: [{sequence: {items: 4, batch: 2}}]}
  all: {from: [a, b, c], buffer: 1, pipe: [merge, testing_sink]}
"""


def test_every_item_of_every_input_once_in_input_order(tmp_path):
    sinks: dict[str, list[Any]] = {}
    a, b = [f"a{i}" for i in range(30)], [("b", i) for i in range(20)]
    result = run_graph(GRAPH, sources={"a": a, "b": b}, sinks=sinks, out_dir=tmp_path)
    assert result.status == "completed"
    got = sinks["all"]
    assert len(got) == 30 + 20 + 2
    assert [x for x in got if isinstance(x, str)] == a
    assert [x for x in got if isinstance(x, tuple)] == b
    assert [x for x in got if isinstance(x, list)] == [
        [{"source": "c", "n": 0}, {"source": "c", "n": 1}], [{"source": "c", "n": 2}, {"source": "c", "n": 3}],
    ]  # fmt: skip
    assert result.nodes["all"].stages[0].items_out == 52


def test_empty_inputs_end_the_merge(tmp_path):
    sinks: dict[str, list[Any]] = {}
    result = run_graph(GRAPH, sources={"a": [], "b": []}, sinks=sinks, out_dir=tmp_path)
    assert result.status == "completed"
    assert len(sinks["all"]) == 2  # the sequence's two batches only


def test_merged_kinds_must_suit_the_stage_after_the_merge():
    text = (
        "version: 1\nnodes:\n  a: {pipe: [batches]}\n  b: {pipe: [sequence]}\n"
        "  m: {from: [a, b], pipe: [merge, redact, testing_sink]}\n"
    )
    message = "'redact' consumes ProductBatch | JobResult but 'merge' before it produces ProductBatch | list"
    with pytest.raises(AssertionError, match=re.escape(message)):
        run_graph(text, kinds=[typed_source("batches", ProductBatch, [])])
