"""graph.yaml validation: every broken variant gets exactly one located line,
exit 2 and no traceback; interpolation, overrides and anchors behave."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flow.cli import main
from flow.graph import check
from flow.registry import default_registry
from flow.spec import SpecError, parse_spec
from mocks import ServerSpec

BROKEN = [
    pytest.param(
        "version: 1\nnodes:\n  a: {pipe: [sequence\n",
        "graph.yaml:4:1: invalid YAML: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence)",
        id="yaml-unclosed-flow",
    ),
    pytest.param(
        "version: 1\nnodes:\n  a:\n    pipe: [sequence]\n   from: b\n",
        "graph.yaml:5:4: invalid YAML: expected <block end>, but found '<block mapping start>' (while parsing a block mapping)",
        id="yaml-bad-indent",
    ),
    pytest.param(
        "version: 1\nnodes:\n\ta: {pipe: [sequence]}\n",
        "graph.yaml:3:1: invalid YAML: found character '\\t' that cannot start any token (while scanning for the next token)",
        id="yaml-tab",
    ),
    pytest.param(
        "version: 1\nnodes:\n  a: {pipe: [sequence, collect]}\n  a: {pipe: [sequence, collect]}\n",
        "graph.yaml:4:3: duplicate key 'a' (first defined on line 3)",
        id="yaml-duplicate-node",
    ),
    pytest.param(
        "- version: 1\n",
        "graph.yaml:1:1: a graph file is a mapping with 'version: 1' and 'nodes:'; hint: start from the graph.yaml that ships with flow",
        id="not-a-mapping",
    ),
    pytest.param(
        "",
        "graph.yaml:1:1: a graph file is a mapping with 'version: 1' and 'nodes:'; hint: start from the graph.yaml that ships with flow",
        id="empty-file",
    ),
    pytest.param("nodes: {}\n", "graph.yaml:1:1: missing required key 'version'", id="missing-version"),
    pytest.param(
        "version: 2\n",
        "graph.yaml:1:10: invalid enum value 2; hint: flow reads graph files of version 1",
        id="wrong-version",
    ),
    pytest.param(
        "version: 1\nnode: {}\n",
        "graph.yaml:2:1: unknown key 'node'; hint: did you mean 'nodes'?",
        id="unknown-top-key",
    ),
    pytest.param(
        "version: 1\nrun: {deadlin: 30s}\n",
        "graph.yaml:2:7: unknown key 'deadlin'; hint: did you mean 'deadline'?",
        id="run-typo",
    ),
    pytest.param(
        "version: 1\nrun: {deadline: 5 minutes}\n",
        "graph.yaml:2:17: expected a duration such as '250ms' or '2s', got '5 minutes'",
        id="bad-deadline",
    ),
    pytest.param(
        "version: 1\ntelemetry: {traces: jaeger}\n",
        "graph.yaml:2:21: invalid enum value 'jaeger'; hint: choose one of: console, none, otlp",
        id="telemetry-exporter",
    ),
    pytest.param(
        "version: 1\ntelemetry: {trace: otlp}\n",
        "graph.yaml:2:13: unknown key 'trace'; hint: did you mean 'traces'?",
        id="telemetry-typo",
    ),
    pytest.param(
        "version: 1\nrun: {deadline: 0s}\n",
        "graph.yaml:2:17: deadline: must be longer than 0s",
        id="zero-deadline",
    ),
    pytest.param("version: 1\nrun: {buffer: 0}\n", "graph.yaml:2:15: expected `int` >= 1", id="buffer-zero"),
    pytest.param(
        "version: 1\nrun: {buffer: lots}\n", "graph.yaml:2:15: expected `int`, got `str`", id="buffer-string"
    ),
    pytest.param(
        "version: 1\nnodes:\n  a: {pipe: [sequence, collect], buffer: -1}\n",
        "graph.yaml:3:42: expected `int` >= 1",
        id="node-buffer-negative",
    ),
    pytest.param(
        "version: 1\nnodes:\n  a: {pipe: []}\n",
        "graph.yaml:3:13: expected `array` of length >= 1",
        id="pipe-empty",
    ),
    pytest.param(
        "version: 1\nnodes:\n  a: {from: b}\n",
        "graph.yaml:3:6: missing required key 'pipe'",
        id="pipe-missing",
    ),
    pytest.param(
        "version: 1\nnodes:\n  a: {pipe: [sequence, collect], form: b}\n",
        "graph.yaml:3:34: unknown key 'form'; hint: did you mean 'from'?",
        id="node-key-typo",
    ),
    pytest.param(
        "version: 1\nnodes:\n  a:\n    pipe: [sequense, collect]\n",
        "graph.yaml:4:12: unknown stage 'sequense'; hint: did you mean 'sequence'?",
        id="stage-typo",
    ),
    pytest.param(
        "version: 1\nnodes:\n  a:\n    pipe:\n      - colect: {path: x}\n",
        "graph.yaml:5:9: unknown stage 'colect'; hint: did you mean 'collect'?",
        id="stage-typo-with-params",
    ),
    pytest.param(
        "version: 1\nnodes:\n  a:\n    pipe: [{sequence: {itemz: 3}}, collect]\n",
        "graph.yaml:4:24: unknown key 'itemz'; hint: did you mean 'items'?",
        id="param-typo",
    ),
    pytest.param(
        "version: 1\nnodes:\n  a:\n    pipe: [{sequence: {items: many}}, collect]\n",
        "graph.yaml:4:31: expected `int`, got `str`",
        id="param-type",
    ),
    pytest.param(
        "version: 1\nnodes:\n  a:\n    pipe: [{sequence: {batch: 0}}, collect]\n",
        "graph.yaml:4:31: expected `int` >= 1",
        id="param-negative",
    ),
    pytest.param(
        "version: 1\nnodes:\n  a:\n    pipe: [{sequence: {}, collect: {}}]\n",
        "graph.yaml:4:12: a pipe entry is a stage name or {stage: {params}}; hint: write '- merge' or '- dedupe: {key: id}'",
        id="entry-two-keys",
    ),
    pytest.param(
        "version: 1\nnodes:\n  a:\n    pipe: [sequence, 42]\n",
        "graph.yaml:4:22: expected `str | object`, got `int`",
        id="entry-number",
    ),
    pytest.param(
        "version: 1\nnodes:\n  a: {pipe: [sequence]}\n  b: {from: aa, pipe: [collect]}\n",
        "graph.yaml:4:13: node 'b' reads from 'aa', which is not a node; hint: did you mean 'a'?",
        id="dangling-from",
    ),
    pytest.param(
        "version: 1\nnodes:\n  a: {from: a, pipe: [merge, collect]}\n",
        "graph.yaml:3:13: node 'a' reads from itself",
        id="self-loop",
    ),
    pytest.param(
        "version: 1\nnodes:\n  s: {pipe: [sequence]}\n  a: {from: [s, c], pipe: [merge]}\n  b: {from: a, pipe: [merge]}\n  c: {from: b, pipe: [merge]}\n  out: {from: c, pipe: [collect]}\n",
        "graph.yaml:4:13: cycle: a -> b -> c -> a; hint: a graph must not feed a node's output back into it",
        id="cycle",
    ),
    pytest.param(
        "version: 1\nnodes:\n  a: {pipe: [sequence]}\n  b: {from: a, pipe: [sequence, collect]}\n",
        "graph.yaml:4:7: node 'b' starts with source 'sequence' but is given inputs; hint: drop 'from:' or start the pipe with another stage",
        id="source-with-inputs",
    ),
    pytest.param(
        "version: 1\nnodes:\n  a: {pipe: [merge, collect]}\n",
        "graph.yaml:3:14: node 'a' has no 'from:' and its first stage 'merge' is not a source; hint: add 'from: NODE' or start the pipe with a source",
        id="no-inputs-no-source",
    ),
    pytest.param(
        "version: 1\nnodes:\n  a: {pipe: [sequence]}\n  b: {pipe: [sequence]}\n  c: {from: [a, b], pipe: [redact, collect]}\n",
        "graph.yaml:5:28: node 'c' reads from 2 outputs, so its pipe must start with a fan-in stage, not 'redact'; hint: start the pipe with 'merge'",
        id="fan-in-without-merge",
    ),
    pytest.param(
        "version: 1\nnodes:\n  a: {pipe: [sequence, sequence, collect]}\n",
        "graph.yaml:3:24: source 'sequence' can only start a pipe",
        id="source-mid-pipe",
    ),
    pytest.param(
        "version: 1\nnodes:\n  a: {pipe: [sequence, collect, merge]}\n",
        "graph.yaml:3:33: 'merge' follows sink 'collect', which passes nothing on; hint: a sink ends its pipe",
        id="after-sink",
    ),
    pytest.param(
        "version: 1\nnodes:\n  a: {pipe: [sequence, collect]}\n  b: {from: a, pipe: [collect]}\n",
        "graph.yaml:3:13: node 'a' ends in sink 'collect' but 'b' read from it",
        id="reads-from-sink",
    ),
    pytest.param(
        "version: 1\nnodes:\n  'shop a': {pipe: [sequence, collect]}\n",
        "graph.yaml:3:3: node name 'shop a' is not an identifier; hint: use letters, digits, '_' and '-', starting with a letter",
        id="bad-node-name",
    ),
    pytest.param(
        'version: 1\nnodes:\n  a:\n    pipe: [{sequence: {items: "${FLOW_TEST_UNSET}"}}, collect]\n',
        "graph.yaml:4:31: environment variable FLOW_TEST_UNSET is not set; hint: export FLOW_TEST_UNSET, or write ${FLOW_TEST_UNSET:-default}",
        id="env-missing",
    ),
    pytest.param(
        'version: 1\nnodes:\n  a:\n    pipe: [{collect: {path: "${1BAD}"}}]\n  s: {pipe: [sequence]}\n',
        "graph.yaml:4:29: '${1BAD}' is neither ${VAR}, ${VAR:-default} nor ${mocks.NAME.url}",
        id="env-bad-syntax",
    ),
    pytest.param(
        'version: 1\nmocks: {shop_a: {style: dummyjson}}\nnodes:\n  a: {pipe: [sequence, {collect: {path: "${mocks.shop_b.url}"}}]}\n',
        "graph.yaml:4:41: '${mocks.shop_b.url}' names no server of the mocks: block",
        id="mock-ref-unknown",
    ),
    pytest.param(
        "version: 1\nmocks:\n  shop_a: {style: dummyjson, eror_rate: 0.1}\nnodes: {a: {pipe: [sequence, collect]}}\n",
        "graph.yaml:3:30: unknown key 'eror_rate'; hint: did you mean 'error_rate'?",
        id="mock-option-typo",
    ),
    pytest.param(
        "version: 1\nmocks:\n  shop_a: {style: dummyjson, rate_limit: fast}\nnodes: {a: {pipe: [sequence, collect]}}\n",
        "graph.yaml:3:42: rate_limit: expected a rate such as '5/s', '10/2s' or 'off', got 'fast'",
        id="mock-bad-rate",
    ),
    pytest.param(
        "version: 1\nmocks:\n  shop_a: {style: shopify}\nnodes: {a: {pipe: [sequence, collect]}}\n",
        "graph.yaml:3:19: invalid enum value 'shopify'; hint: choose one of: async_vendor, cursor, dummyjson, jsonserver, platzi, reqres, sync_vendor",
        id="mock-bad-style",
    ),
    pytest.param(
        "version: 1\nnodes:\n  a: {pipe: [{paginate: {url: example.com/p, style: offset}}, fetch, collect]}\n",
        "graph.yaml:3:31: url: expected an http:// or https:// URL, got 'example.com/p'",
        id="url-without-scheme",
    ),
    pytest.param(
        "version: 1\nnodes:\n  a: {pipe: [{paginate: {url: 'http://x/p', style: offset}}, {fetch: {timeout: 0s}}, collect]}\n",
        "graph.yaml:3:80: timeout: must be longer than 0s (without a timeout a request can hang)",
        id="timeout-zero",
    ),
    pytest.param(
        "version: 1\nnodes:\n  a: {pipe: [sequence, {normalize: {preset: reqres, map: {titel: name}}}, collect]}\n",
        "graph.yaml:3:58: map: 'titel' is not a mapped field; did you mean 'title'? (other fields: `extra:`)",
        id="map-key-typo",
    ),
    pytest.param(
        "version: 1\nnodes:\n  a: {pipe: [sequence, {dedupe: {key: sku}}, collect]}\n",
        "graph.yaml:3:39: key: 'sku' is not a field of the product record; fields: id, source_id, title, source, "
        "price, currency, category, processed_at, timestamp, quality, extra",
        id="dedupe-key-not-a-field",
    ),
    pytest.param(
        "version: 1\n",
        "graph.yaml:1:1: the graph has no nodes; hint: add 'nodes:' with a source and a sink, as in the graph.yaml "
        "that ships with flow",
        id="no-nodes",
    ),
    pytest.param(
        "version: 1\nnodes:\n  a: {pipe: [{paginate: {url: 'http://x/p', style: offset}}, {rate_limit: {rate: 5}}, fetch, collect]}\n",
        "graph.yaml:3:82: expected a rate such as '5/s', '10/2s' or 'off', got 5; did you mean '5/s'?",
        id="rate-without-unit",
    ),
]


@pytest.mark.parametrize("text,expected", BROKEN)
def test_broken_graph_gets_one_located_line(tmp_path, monkeypatch, capsys, text, expected):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLOW_TEST_UNSET", raising=False)
    (tmp_path / "graph.yaml").write_text(text)
    assert main(["validate", "graph.yaml"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == expected + "\n"
    assert "Traceback" not in captured.err


def test_there_are_at_least_25_variants():
    assert len(BROKEN) >= 25


REGISTRY = default_registry()
GOOD = """\
version: 1
run: {deadline: "${DEADLINE:-30s}"}
x-shop: &shop
  pipe: [{sequence: {items: "${ITEMS:-40}", batch: 8}}]
nodes:
  a: *shop
  b:
    <<: *shop
  out: {from: [a, b], buffer: 2, pipe: [merge, collect]}
"""


def test_defaults_anchors_and_merge_keys():
    spec = parse_spec(GOOD, REGISTRY, env={})
    assert spec.run.deadline == 30.0 and str(spec.run.deadline) == "30s"
    assert spec.nodes["a"].stages[0].params.items == 40  # "${ITEMS:-40}" fills an int field
    assert spec.nodes["out"].buffer == 2 and spec.nodes["a"].buffer == 8
    assert check(spec) == []


def test_environment_then_set_override_the_file():
    env = {"ITEMS": "7", "FLOW__RUN__DEADLINE": "20s", "FLOW__RUN__BUFFER": "3"}
    spec = parse_spec(GOOD, REGISTRY, env=env)
    assert spec.nodes["a"].stages[0].params.items == 7
    assert (spec.run.deadline, spec.run.buffer) == (20.0, 3)
    spec = parse_spec(GOOD, REGISTRY, env=env, sets=["run.deadline=10s", "nodes.out.buffer=5"])
    assert (spec.run.deadline, spec.run.buffer, spec.nodes["out"].buffer) == (10.0, 3, 5)


def test_values_from_the_environment_are_never_echoed():
    text = GOOD.replace('"${ITEMS:-40}"', '"${API_KEY}"')
    with pytest.raises(SpecError) as info:
        parse_spec(text, REGISTRY, env={"API_KEY": "s3cr3t-value"})
    assert info.value.lines == ["graph.yaml:4:29: expected `int`, got `str`"]  # once, though used twice
    assert "s3cr3t" not in str(info.value)


def test_mock_references_are_kept_for_run_time():
    text = "version: 1\nmocks: {shop_a: {style: platzi}}\nnodes:\n  a: {pipe: [sequence, {collect: {path: '${mocks.shop_a.url}'}}]}\n"
    spec = parse_spec(text, REGISTRY, env={})
    assert spec.nodes["a"].stages[1].params.path == "${mocks.shop_a.url}"
    assert spec.mocks["shop_a"] == {"style": "platzi"}  # the engine keeps a mock's settings raw
    spec = parse_spec(text, REGISTRY, env={}, mocks_type=ServerSpec, refs={"shop_a": "http://127.0.0.1:9"})
    assert spec.nodes["a"].stages[1].params.path == "http://127.0.0.1:9"  # filled in once started
    assert spec.mocks["shop_a"].style == "platzi"


def test_a_node_reaching_no_sink_is_a_warning(tmp_path, capsys):
    path = tmp_path / "g.yaml"
    path.write_text("version: 1\nnodes:\n  a: {pipe: [sequence]}\n  b: {pipe: [sequence, collect]}\n")
    assert main(["validate", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        f"{path}:3:3: warning: node 'a' reaches no sink; its items are dropped; "
        "hint: add a sink such as 'collect' downstream\n"
    )
    assert captured.out.startswith(f"{path}: valid")


def test_every_problem_of_a_file_is_reported_at_once():
    text = "version: 1\nnodes:\n  a: {pipe: [sequense]}\n  b: {pipe: [{sequence: {itemz: 1}}]}\n"
    with pytest.raises(SpecError) as info:
        parse_spec(text, REGISTRY, env={})
    assert info.value.lines == [
        "graph.yaml:3:14: unknown stage 'sequense'; hint: did you mean 'sequence'?",
        "graph.yaml:4:26: unknown key 'itemz'; hint: did you mean 'items'?",
    ]


def test_overrides_are_blamed_for_their_own_values(tmp_path, monkeypatch, capsys):
    (tmp_path / "graph.yaml").write_text("version: 1\nnodes:\n  a: {pipe: [sequence, collect]}\n")
    monkeypatch.setenv("FLOW__RUN__DEADLINE", "soon")
    assert main(["validate", str(tmp_path / "graph.yaml")]) == 2
    err = capsys.readouterr().err  # the variable is named, not a line of the file
    assert err == "FLOW__RUN__DEADLINE: expected a duration such as '250ms' or '2s', got 'soon'\n"


def test_a_file_that_is_not_text_gets_a_message_not_a_traceback(tmp_path, capsys):
    (tmp_path / "nul.yaml").write_bytes(b"version: 1\nnodes: {}\x00\n")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage")
    assert main(["validate", str(tmp_path / "nul.yaml")]) == 2
    assert capsys.readouterr().err == f"{tmp_path / 'nul.yaml'}:2: a NUL byte; a graph file is YAML text\n"
    assert main(["validate", str(tmp_path / "bin.yaml")]) == 2
    assert capsys.readouterr().err == f"flow: error: {tmp_path / 'bin.yaml'}: not UTF-8 text (byte 0); a graph file is YAML\n"


LOADER_CASES = [
    (Path(__file__).parents[2] / "graph.yaml").read_text(encoding="utf-8"),
    "x: &a {k: 1, l: [1, 2]}\ny:\n  <<: *a\n  k: 2\n\"ключ\": é日本 {x}\nz: |\n  two\n  lines\n",
    "a: 1\r\nb:\r\n  - c\r\n",
]


@pytest.mark.parametrize("text", LOADER_CASES)
def test_libyaml_and_the_python_loader_agree(text):
    """Graphs are parsed by libyaml; PyYAML's Python loader (whose errors
    flow shows) reads the same data, with every node at the same place."""
    from flow._yaml import _FastLoader, _Loader, _parse

    def places(node, out):
        out.append((node.tag, getattr(node, "value", None) if not isinstance(node.value, list) else None,
                    node.start_mark.line, node.start_mark.column))  # fmt: skip
        for child in node.value if isinstance(node.value, list) else []:
            for part in child if isinstance(child, tuple) else (child,):
                places(part, out)
        return out

    (fast, fast_at), (slow, slow_at) = _parse(text, _FastLoader), _parse(text, _Loader)
    assert issubclass(_FastLoader, yaml.CSafeLoader)
    assert fast == slow
    assert places(fast_at.root, []) == places(slow_at.root, [])


def test_yaml_patterns_compile_when_first_used_and_still_decide_alike():
    """flow._yaml imports PyYAML with its regular expressions compiled on
    first use. Each side in a fresh interpreter, PyYAML imported first
    (patterns compiled at once) or by flow._yaml: the same data from every
    implicit type, the same located error for a non-printable character,
    and `re.compile` is the standard one again."""
    script = (
        "import re, sys\n"
        "if sys.argv[1] == 'eager': import yaml\n"
        "import flow._yaml as fy, yaml\n"
        "import copy; pattern = yaml.reader.Reader.NON_PRINTABLE\n"
        "print(type(pattern).__name__, re.compile.__qualname__, type(copy.deepcopy(pattern)).__name__)\n"
        "print(fy.load('a: [true, 0x1f, 2.5e+3, ~, 2020-01-02, .inf, 1_0, x, no]')[0])\n"
        "try:\n    fy.load('a: b\\x07')\nexcept fy.YAMLError as e:\n    print(e.line, e.column, repr(e.message))\n"
    )

    def run(mode: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", script, mode], capture_output=True, text=True, check=True
        )
        return done.stdout.splitlines()

    (lazy, *results), (eager, *expected) = run("lazy"), run("eager")
    assert (lazy, eager) == ("_LazyPattern compile Pattern", "Pattern compile Pattern")
    assert results == expected
    assert expected[0] == "{'a': [True, 31, 2500.0, None, datetime.date(2020, 1, 2), inf, 10, 'x', False]}"
    assert "unacceptable character #x0007" in expected[1]
