"""The `flow` command: help, version, usage errors, and each command's output
and exit code (in-process; one subprocess checks the real entry point)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flow import __version__
from flow.cli import main

GRAPH = """\
version: 1
run: {buffer: 4}
nodes:
  a: {pipe: [{sequence: {items: 50}}]}
  b: {pipe: [{sequence: {items: 7, batch: 3}}]}
  both:
    from: [a, b]
    pipe: [merge, {collect: {path: x.jsonl}}]
"""


@pytest.fixture
def graph(tmp_path: Path) -> Path:
    path = tmp_path / "graph.yaml"
    path.write_text(GRAPH)
    return path


# The built-in stage kinds, in the order `flow stages` and the schema list them.
BUILT_IN = sorted(
    "collect csv dedupe fetch job_store jobs jsonl merge normalize paginate parse parquet postgres quality rate_limit"
    " redact report sequence sqlite summary_json vendor window".split()
)


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: flow")
    for command in ("validate", "graph", "stages", "schema", "mocks"):
        assert f"    {command} " in out


def test_no_command_is_bad_usage(capsys):
    assert main([]) == 2
    assert "usage: flow" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out == f"flow {__version__}\n"


def test_unknown_command_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["runn"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("flow: error: argument COMMAND: invalid choice: 'runn'") and err.count("\n") == 1


def test_validate_ok(graph, capsys):
    assert main(["validate", str(graph)]) == 0
    assert capsys.readouterr().out == f"{graph}: valid (3 nodes, 4 stages, 0 mock servers)\n"


def test_validate_reports_located_errors_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(GRAPH.replace("merge,", "merj,"))
    assert main(["validate", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"{bad}:8:12: unknown stage 'merj'; hint: did you mean 'merge'?\n"


def test_set_overrides_and_is_located_when_wrong(graph, capsys):
    assert main(["validate", str(graph), "--set", "nodes.a.pipe.0.sequence.items=oops"]) == 2
    assert capsys.readouterr().err == "--set nodes.a.pipe.0.sequence.items=oops: expected `int`, got `str`\n"
    assert main(["validate", str(graph), "--set", "run.buffer"]) == 2
    assert capsys.readouterr().err == "--set run.buffer: expected PATH=VALUE, e.g. run.deadline=30s\n"


def test_graph_mermaid_and_dot(graph, capsys):
    assert main(["graph", str(graph)]) == 0
    mermaid = capsys.readouterr().out
    assert mermaid.startswith("flowchart LR\n")
    assert '    both["both<br/>merge → collect"]' in mermaid and "    a -- 4 --> both" in mermaid
    assert main(["graph", str(graph), "--format", "dot"]) == 0
    assert '"b" -> "both" [label="4"];' in capsys.readouterr().out


def test_stages_list_and_describe(capsys):
    assert main(["stages"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listing] == sorted([*BUILT_IN, "stamp"])  # tests/plugin's too
    [plugin] = [line for line in listing if "flow-example-stages" in line]
    assert plugin.split() == ["stamp", "list", "->", "list", "Add", "`field:", "value`", "to", "every", "record",
                              "of", "a", "batch", "and", "count", "the", "records.", "(flow-example-stages)"]
    assert main(["stages", "sequence"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("sequence: (source) -> list\n")
    assert "  items: int  (default 100)\n" in text and "  batch: int  (default 20)\n" in text
    assert main(["stages", "sequenc"]) == 2
    assert capsys.readouterr().err == "flow: error: unknown stage 'sequenc'; did you mean 'sequence'?\n"


def test_schema_covers_stage_params(capsys):
    import json

    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    entry = schema["$defs"]["NodeSpec"]["properties"]["pipe"]["items"]["anyOf"]
    assert {"enum": sorted([*BUILT_IN, "stamp"])} in entry  # installed kinds are in the editor schema
    assert "SequenceParams" in schema["$defs"] and "ServerSpec" in schema["$defs"]


def test_shipped_schema_is_current():
    import json

    from flow.registry import default_registry
    from flow.schema import graph_schema
    from mocks import ServerSpec

    shipped = json.loads((Path(__file__).parents[2] / "schema" / "graph.schema.json").read_text())
    schema = graph_schema(default_registry(plugins=False), mocks_type=ServerSpec)  # flow's own kinds
    assert shipped == json.loads(json.dumps(schema)), "regenerate: flow schema --builtin > schema/graph.schema.json"


def test_flow_mocks_is_the_mocks_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["mocks", "--help"])
    assert info.value.code == 0
    assert "usage: flow mocks" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["mocks", "--error-rate", "x"])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("flow mocks: error: argument --error-rate")


def test_entry_point_validates_the_shipped_graph():
    root = Path(__file__).parents[2]
    result = subprocess.run(
        [sys.executable, "-m", "flow", "validate", "graph.yaml"], cwd=root, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("graph.yaml: valid")


def test_the_graph_reference_example_validates(tmp_path, capsys):
    import re

    reference = (Path(__file__).parents[2] / "docs" / "graph.md").read_text()
    example = re.search(r"```yaml\n(# yaml-language-server.*?)```", reference, re.S)
    assert example is not None
    path = tmp_path / "graph.yaml"
    path.write_text(example[1])
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    assert main(["graph", str(path)]) == 0
    assert "    a -- 2 --> out" in capsys.readouterr().out


# What each command leaves unimported, so that it starts fast: `flow --help`
# no command module and none of the engine's libraries; `flow validate` only
# the params of the stage kinds its graph names (no asyncio, HTTP client,
# OpenTelemetry, runtime); a run without telemetry no exporter, a run
# without mocks no mock server. Module sets, not timings: those are noisy.
COMMAND_MODULES = ("flow.cli.run", "flow.cli.validate", "flow.cli.graph", "flow.cli.stages", "flow.cli.schema")
KEPT_OUT = {
    "help": (
        *COMMAND_MODULES, "asyncio", "msgspec", "yaml", "aiohttp", "aiostream", "opentelemetry", "mocks",
        "importlib.metadata", "flow.registry", "stages",
    ),
    "validate": (
        "flow.cli.run", "asyncio", "aiohttp", "yarl", "aiostream", "opentelemetry", "mocks._server",
        "importlib.metadata", "flow.runtime", "flow.telemetry", "flow.otlp", "stages.http.fetcher",
        "stages.http.limiter", "stages.records.csv", "stages.generic.sequence",  # graph.yaml has no csv, sequence
        "sqlite3", "pyarrow", "asyncpg", "concurrent.futures",  # graph.yaml's sqlite sink loads its driver when it runs
    ),
    "run": (
        "flow.cli.validate", "flow.cli.schema", "importlib.metadata", "opentelemetry.sdk", "flow.otlp",
        "urllib.request", "mocks._server", "aiohttp", "stages.records.csv",
    ),
}


@pytest.mark.parametrize("command", KEPT_OUT)
def test_a_command_imports_only_what_it_uses(command, tmp_path):
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text("version: 1\nnodes:\n  a: {pipe: [{sequence: {items: 3}}, collect]}\n")
    args = {
        "help": ["--help"],
        "validate": ["validate", "graph.yaml"],
        "run": ["run", str(tiny), "--out", str(tmp_path / "out"), "-q"],
    }[command]
    code = (
        "import contextlib, io, sys\n"
        "from flow.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    assert main({args!r}) == 0\n"
        f"print(sorted(m for m in {KEPT_OUT[command]!r} if m in sys.modules))\n"
    )
    root = Path(__file__).parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}  # telemetry off
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


def test_validate_strict_makes_warnings_errors(tmp_path, capsys):
    path = tmp_path / "g.yaml"
    path.write_text("version: 1\nnodes:\n  a: {buffer: 3, pipe: [sequence, collect]}\n")
    assert main(["validate", str(path)]) == 0
    assert "warning: node 'a' has no inputs" in capsys.readouterr().err
    assert main(["validate", "--strict", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"{path}:3:7: warning: node 'a' has no inputs")


def test_stages_name_shows_each_params_doc(capsys):
    assert main(["stages", "rate_limit"]) == 0
    text = capsys.readouterr().out
    assert '  rate: rate  (default "5/s")  at most this many requests in any sliding window, retries included\n' in text
    assert main(["stages", "fetch"]) == 0
    assert '  timeout: duration  (default "10s")  one attempt, from connect to the last byte\n' in capsys.readouterr().out


def test_the_shipped_schema_accepts_the_shipped_graph_and_rejects_a_broken_one():
    import json

    import jsonschema
    import yaml

    root = Path(__file__).parents[2]
    validator = jsonschema.Draft7Validator(json.loads((root / "schema" / "graph.schema.json").read_text()))
    graph = yaml.safe_load((root / "graph.yaml").read_text())
    assert [e.message for e in validator.iter_errors(graph)] == []
    graph["nodes"]["shop_a"]["pipe"][4]["normalize"]["preset"] = "shopify"
    [error] = validator.iter_errors(graph)
    assert "'shopify' is not valid" in error.message or "shopify" in str(error.instance)
