"""The runs' state file: a run that did not finish (stopped, killed) is
named by the next run of the same graph, on stderr, which then starts afresh."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from flow.state import StateFile

ROOT = Path(__file__).parents[2]
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FLOW__"))}
GRAPH = """\
version: 1
run: {deadline: 2s, grace: 1s}
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


def test_the_last_run_of_a_graph_is_unfinished_until_it_completes(tmp_path):
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
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()  # a process that has ended: its pid names no process now
        with sqlite3.connect(tmp_path / "state.db") as db:
            db.execute("INSERT INTO runs VALUES ('r3', 'g.yaml', ?, 'running', 't', NULL)", (gone.pid,))
        last = state.last_unfinished("g.yaml")
        assert (last.run_id, last.status) == ("r3", "killed or crashed")
        assert state.last_unfinished("g.yaml").status == "killed or crashed"  # marked crashed: said again
        alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            with sqlite3.connect(tmp_path / "state.db") as db:
                db.execute("INSERT INTO runs VALUES ('r4', 'g.yaml', ?, 'running', 't', NULL)", (alive.pid,))
            assert state.last_unfinished("g.yaml").status == f"still running (pid {alive.pid})"
        finally:
            alive.kill()
            alive.wait()
    finally:
        state.close()


def test_a_run_killed_with_sigkill_is_named_by_the_next_run(tmp_path):
    graph = tmp_path / "graph.yaml"
    graph.write_text(GRAPH)
    command = [sys.executable, "-m", "flow", "run", str(graph), "--out", str(tmp_path / "out"), "-q", "--no-progress"]
    first = subprocess.Popen(command, cwd=ROOT, env=ENV, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        state = tmp_path / "out" / "state.db"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # bounded: until the run has recorded itself
            if state.exists():
                with sqlite3.connect(state) as db:
                    if db.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()[0]:
                        break
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait(timeout=30)
        first.stderr.close()
    with sqlite3.connect(state) as db:
        ((killed,),) = db.execute("SELECT run_id FROM runs").fetchall()
    second = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    assert f"(run {killed}, started " in second.stderr and "did not finish: killed or crashed" in second.stderr
    assert "this run starts afresh" in second.stderr
    with sqlite3.connect(state) as db:
        rows = db.execute("SELECT run_id, status FROM runs ORDER BY rowid").fetchall()
    assert rows[0] == (killed, "crashed") and rows[1][1] == "deadline" and len(rows) == 2
    third = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    assert "did not finish: deadline" in third.stderr  # the second one was cut short by its deadline
