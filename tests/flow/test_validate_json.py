"""`flow validate --format json`: the same problems as the text lines, as
fields an editor or a CI step can use, and the same exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.mock_servers import ENV

BROKEN = """\
version: 1
nodes:
  a: {pipe: [sequence, {csv: {columns: [id, cost]}}]}
  b: {pipe: [{fetch: {timeout: 0s}}]}
  c: {pipe: [sequense]}
"""
UNREAD = """\
version: 1
nodes:
  a: {pipe: [sequence]}
  b: {pipe: [sequence, collect]}
"""


def _validate(*args: str) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, "-m", "flow", "validate", *args], env=ENV, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def test_every_problem_is_the_text_line_as_fields(tmp_path: Path) -> None:
    graph = tmp_path / "graph.yaml"
    graph.write_text(BROKEN)
    code, _, text_err = _validate(str(graph))
    json_code, json_out, json_err = _validate(str(graph), "--format", "json")
    assert code == json_code == 2 and json_err == ""
    report = json.loads(json_out)
    assert report["valid"] is False and report["file"] == str(graph)
    lines = text_err.strip().splitlines()
    assert len(report["problems"]) == len(lines) == 3
    for problem, line in zip(report["problems"], lines, strict=True):
        rebuilt = f"{problem['where']}: {problem['message']}" + (f"; hint: {problem['hint']}" if problem["hint"] else "")
        assert rebuilt == line and problem["severity"] == "error"
        assert problem["where"] == f"{graph}:{problem['line']}:{problem['column']}"
    assert [p["line"] for p in report["problems"]] == [3, 4, 5]
    assert report["problems"][2]["hint"] == "did you mean 'sequence'?"


def test_warnings_are_problems_of_a_valid_graph_unless_strict(tmp_path: Path) -> None:
    graph = tmp_path / "graph.yaml"
    graph.write_text(UNREAD)
    code, out, _ = _validate(str(graph), "--format", "json")
    report = json.loads(out)
    assert code == 0 and report["valid"] is True and (report["nodes"], report["stages"]) == (2, 3)
    assert [p["severity"] for p in report["problems"]] == ["warning"]
    assert report["problems"][0]["line"] == 3
    strict_code, strict_out, _ = _validate(str(graph), "--format", "json", "--strict")
    assert strict_code == 2 and [p["severity"] for p in json.loads(strict_out)["problems"]] == ["error"]


def test_overrides_and_unreadable_files_are_named_not_located(tmp_path: Path) -> None:
    code, out, _ = _validate(str(Path(__file__).parents[2] / "graph.yaml"), "--format", "json", "--set",
                             "run.deadline=banana")  # fmt: skip
    problem = json.loads(out)["problems"][0]
    assert code == 2 and problem["where"] == "--set run.deadline=banana" and problem["line"] is None
    code, out, _ = _validate(str(tmp_path / "missing.yaml"), "--format", "json")
    assert code == 2 and "cannot read" in json.loads(out)["problems"][0]["message"]


def test_a_path_or_a_value_holding_a_colon_and_space_is_not_split_there(tmp_path: Path) -> None:
    folder = tmp_path / "a: b"
    folder.mkdir()
    graph = folder / "graph.yaml"
    graph.write_text(BROKEN)
    _, out, _ = _validate(str(graph), "--format", "json")
    first = json.loads(out)["problems"][0]
    assert (first["where"], first["line"], first["column"]) == (f"{graph}:3:40", 3, 40)
    _, out, _ = _validate(str(Path(__file__).parents[2] / "graph.yaml"), "--format", "json", "--set",
                          "run.deadline=a: b")  # fmt: skip
    problem = json.loads(out)["problems"][0]
    assert problem["where"] == "--set run.deadline=a: b" and problem["message"].endswith("got 'a: b'")
