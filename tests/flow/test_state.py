"""The runs' state file: a run that did not finish (stopped, cut by its
deadline, killed) is named by the next run of the same graph, on stderr,
which then starts afresh; a second run on the same output directory is
refused while the first holds it; a state file that cannot be used costs a
warning, never the run or its report."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flow.state import Busy, StateFile

ROOT = Path(__file__).parents[2]
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FLOW__"))}
GRAPH = """\
version: 1
run: {deadline: 20s, grace: 1s}
mocks: {shop: {style: dummyjson, products: 500, rate_limit: 5/s}}
nodes:
  shop:
    pipe:
      - paginate: {url: "${mocks.shop.url}/products", style: skip_limit, page_size: 20}
      - rate_limit: {rate: 5/s}
      - fetch
      - parse: {schema: dummyjson}
      - normalize: {preset: dummyjson}
  out: {from: shop, pipe: [{collect: {path: products.jsonl}}]}
"""


def _rows(path: Path) -> list[tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT run_id, status FROM flow_runs ORDER BY rowid").fetchall()


def test_the_last_run_of_a_graph_is_unfinished_until_one_completes(tmp_path):
    state = StateFile(tmp_path / "state.db")
    try:
        assert state.last_unfinished("g.yaml") is None
        state.started("r1", "g.yaml", "2026-11-26T10:00:00.000Z")
        state.ended("r1", "interrupted", "2026-11-26T10:00:01.000Z")
        assert state.last_unfinished("g.yaml").status == "interrupted"
        assert state.last_unfinished("other.yaml") is None  # per graph
        state.started("r2", "g.yaml", "2026-11-26T10:01:00.000Z")
        state.ended("r2", "completed", "2026-11-26T10:01:01.000Z")
        assert state.last_unfinished("g.yaml") is None
        state.started("r3", "g.yaml", "2026-11-26T10:02:00.000Z")  # never ended: the process died
        last = state.last_unfinished("g.yaml")
        assert (last.run_id, last.status) == ("r3", "killed or crashed")
        assert _rows(tmp_path / "state.db")[-1] == ("r3", "crashed")
        with pytest.raises(Busy, match=f"pid {os.getpid()}"):  # the lock is held while this one is open
            StateFile(tmp_path / "state.db")
    finally:
        state.close()
    StateFile(tmp_path / "state.db").close()  # free again once closed


def _flow(graph: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "flow", "run", str(graph), "--out", str(out), "--no-progress", *extra]


def test_a_run_killed_with_sigkill_is_named_by_the_next_run_and_a_second_one_is_refused(tmp_path):
    graph, out = tmp_path / "graph.yaml", tmp_path / "out"
    graph.write_text(GRAPH)
    first = subprocess.Popen(_flow(graph, out), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # bounded: until the run has recorded itself
            with contextlib.suppress(sqlite3.Error):  # the file may exist before its table
                if [s for _, s in _rows(out / "state.db")] == ["running"]:
                    break
            time.sleep(0.05)
        else:
            pytest.fail("the run never recorded itself in the state file")
        refused = subprocess.run(_flow(graph, out), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and f"(pid {first.pid})" in refused.stderr and "nothing ran" in refused.stderr
        first.send_signal(signal.SIGKILL)
    finally:
        if first.poll() is None:
            first.kill()
        first.wait(timeout=30)
    ((killed, _),) = _rows(out / "state.db")
    short = ("--set", "run.deadline=300ms")
    second = subprocess.run(_flow(graph, out, *short), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    assert f"(run {killed}, started " in second.stderr and "did not finish: killed or crashed" in second.stderr
    assert "this run starts afresh" in second.stderr and (out / "run.json").exists()
    rows = _rows(out / "state.db")
    assert rows[0] == (killed, "crashed") and rows[1][1] == "deadline" and len(rows) == 2
    third = subprocess.run(_flow(graph, out, *short), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    assert "did not finish: deadline" in third.stderr  # the second one was cut short by its deadline


def test_a_state_file_that_cannot_be_used_costs_a_warning_not_the_run(tmp_path):
    graph, out = tmp_path / "graph.yaml", tmp_path / "out"
    graph.write_text(GRAPH)
    out.mkdir()
    (out / "state.db").write_bytes(b"not a database, " * 100)
    done = subprocess.run(_flow(graph, out, "--set", "run.deadline=300ms"), cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert "the runs' state file" in done.stderr and "goes on without it" in done.stderr
    assert (out / "run.json").exists() and done.returncode == 1  # the run ran: cut by its deadline


def test_a_failed_run_is_named_with_the_way_to_resume_it_and_a_resume_with_nothing_to_resume_starts_afresh(
    tmp_path,
):
    graph = tmp_path / "graph.yaml"
    graph.write_text(
        "version: 1\n"
        "run: {deadline: 20s, grace: 1s}\n"
        "mocks: {shop: {style: dummyjson, products: 60, rate_limit: 'off'}}\n"
        "nodes:\n"
        "  shop:\n"
        "    pipe:\n"
        "      - paginate: {url: '${mocks.shop.url}/products', style: skip_limit, page_size: 20}\n"
        "      - fetch\n"
        "      - parse: {schema: dummyjson}\n"
        "      - normalize: {preset: dummyjson}\n"
        "  dead:\n"  # nothing listens there: every page fails, the run loses them
        "    pipe:\n"
        "      - paginate: {url: 'http://127.0.0.1:9/items', style: offset}\n"
        "      - fetch: {retry: {retries: 0}}\n"
        "      - parse\n"
        "      - normalize: {preset: platzi}\n"
        "  out: {from: [shop, dead], pipe: [{collect: {path: products.jsonl}}]}\n"
    )
    out = tmp_path / "out"
    command = [sys.executable, "-m", "flow", "run", str(graph), "--out", str(out), "--no-progress"]
    first = subprocess.run([*command, "--resume"], env=ENV, capture_output=True, text=True, timeout=60)
    assert first.returncode == 1, first.stderr
    assert "nothing to resume" in first.stderr and "starting afresh" in first.stderr
    assert _rows(out / "state.db")[-1][1] == "failed"  # it lost the dead endpoint's pages
    second = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=60)
    assert "did not finish: failed; this run starts afresh (flow run --resume continues it)" in second.stderr
    third = subprocess.run([*command, "--resume"], env=ENV, capture_output=True, text=True, timeout=60)
    assert "did not finish: failed; resuming it: 3 pages from" in third.stderr, third.stderr
    assert third.returncode == 1
