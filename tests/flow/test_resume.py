"""`flow run --resume` after a crash, proven at the servers and in the table.

Four mock APIs, one per paging style that plans differently (skip_limit
with a total, offset without one, link with Link headers, cursor strictly
sequential), with faults on (5xx, cut bodies, HTML pages, latency), run in a
process of their own so that their request logs outlive every run. The
graph fetches them all into one SQLite table (upsert by id).

For each of SIGKILL and SIGINT, 10 cycles: a fresh `flow run`, the signal
at a random moment of it, then `flow run --resume` until it exits 0. Each
cycle must end with

  - the products table equal, row for row, to an uninterrupted run's in
    every column but `run_id` and `processed_at`, which name the run that
    wrote a row: those hold the run that completed, every row, and a time
    within it;
  - at each server, no page served whole (200, no fault) both before the
    signal and after it, beyond the pages that can have been in flight at
    the signal: the fetch stage's `concurrency` per source (a page is kept
    in the state file before fetch takes another);
  - the last run's ledger balanced, with the pages kept by the runs before
    it counted as `from_state`;
  - the dead-letter store (what `flow replay` reads) equal to the
    uninterrupted run's, and the page log gone once the run completed.
"""

from __future__ import annotations

import json
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.mock_servers import ENV, mock_servers

CYCLES = 10
CONCURRENCY = 4  # the fetch stage's, per source: the bound on pages fetched twice
FAULTS = {"error_rate": 0.04, "truncate_rate": 0.02, "html_rate": 0.02, "latency": "10ms..60ms", "rate_limit": "off"}
MOCKS = {
    "a": {"style": "dummyjson", "products": 300, "seed": 1, **FAULTS},
    "b": {"style": "platzi", "products": 250, "seed": 2, **FAULTS},
    "c": {"style": "jsonserver", "products": 250, "seed": 3, **FAULTS},
    "d": {"style": "cursor", "products": 200, "seed": 4, **FAULTS},
}
SOURCES = {  # name -> (paginate params, preset)
    "a": ({"style": "skip_limit", "page_size": 10}, "dummyjson"),
    "b": ({"style": "offset", "page_size": 10}, "platzi"),
    "c": ({"style": "link", "page_size": 10}, "jsonserver"),
    "d": ({"style": "cursor", "page_size": 10}, "cursor"),
}
RANDOM = random.Random(20261126)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The mock APIs, in a process of their own: name -> the API's URL."""
    with mock_servers(tmp_path_factory.mktemp("mocks"), MOCKS) as urls:
        yield urls


def _graph(tmp: Path, urls: dict[str, str]) -> Path:
    nodes: dict[str, Any] = {}
    for name, (paging, preset) in SOURCES.items():
        nodes[name] = {
            "pipe": [
                {"paginate": {"url": urls[name], **paging}},
                {"fetch": {"timeout": "3s", "concurrency": CONCURRENCY, "retry": {"retries": 4, "backoff": "20ms"}}},
                {"parse": {"schema": preset}} if preset != "jsonserver" else "parse",
                {"normalize": {"preset": preset}},
            ]
        }
    nodes["products"] = {"from": list(SOURCES), "pipe": ["merge", {"dedupe": {"key": "id"}}]}
    nodes["database"] = {"from": "products", "pipe": [{"sqlite": {"path": "products.db"}}]}
    graph = tmp / "graph.yaml"
    graph.write_text(yaml.safe_dump({"version": 1, "run": {"deadline": "60s", "grace": "5s"}, "nodes": nodes}))
    return graph


def _flow(graph: Path, out: Path, *more: str) -> list[str]:
    return [sys.executable, "-m", "flow", "run", str(graph), "--out", str(out), "-q", "--no-progress", *more]


def _table(out: Path) -> list[tuple[Any, ...]]:
    """The products table, without the columns that name the run that wrote a row."""
    with sqlite3.connect(out / "products.db") as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(products)")]
        kept = [c for c in columns if c not in ("run_id", "processed_at")]
        return db.execute(f"SELECT {', '.join(kept)} FROM products ORDER BY id").fetchall()


def _written_by_the_last_run(out: Path) -> bool:
    """The two columns `_table` leaves out hold what they must: every row
    names the run that completed (the resume upserts every product again)
    and was processed while it ran."""
    with sqlite3.connect(out / "state.db") as state:
        run_id, started, finished = state.execute(
            "SELECT run_id, started_at, finished_at FROM flow_runs ORDER BY rowid DESC LIMIT 1"
        ).fetchone()
    with sqlite3.connect(out / "products.db") as db:
        rows = db.execute("SELECT run_id, processed_at FROM products").fetchall()
    return bool(rows) and all(r == run_id and started <= at <= finished for r, at in rows)


def _status(out: Path) -> str | None:
    """What the state file says of the last run in `out`."""
    if not (out / "state.db").exists():
        return None
    with sqlite3.connect(out / "state.db") as db:
        try:
            row = db.execute("SELECT status FROM flow_runs ORDER BY rowid DESC LIMIT 1").fetchone()
        except sqlite3.OperationalError:  # killed between making the file and its table
            return None
    return row[0] if row else None


def _letters(out: Path) -> set[tuple[Any, ...]]:
    """The dead-letter store, without the run that stored each."""
    with sqlite3.connect(out / "state.db") as db:
        return set(db.execute("SELECT key, reason, raw FROM flow_dead_letters").fetchall())


def _served(urls: dict[str, str]) -> dict[str, set[str]]:
    """Per server: the pages (their queries) it served whole since the last
    reset, from its own log; then the log is cleared."""
    served = {}
    for name, api in urls.items():
        url = re.match(r"http://[^/]+", api).group(0)  # type: ignore[union-attr]
        with urllib.request.urlopen(f"{url}/__stats", timeout=10) as answer:
            stats = json.load(answer)
        served[name] = {
            json.dumps(r["query"], sort_keys=True) for r in stats["requests"] if r["status"] == 200 and not r["fault"]
        }
        urllib.request.urlopen(urllib.request.Request(f"{url}/__reset", method="POST"), timeout=10).close()
    return served


def _resume_until_complete(graph: Path, out: Path) -> tuple[int, dict[str, Any]]:
    """`flow run --resume` until it exits 0 (faults may fail a page for good):
    how many runs it took, and the last run's report."""
    for attempt in range(1, 6):
        done = subprocess.run(_flow(graph, out, "--resume"), env=ENV, capture_output=True, text=True, timeout=120)
        assert "Traceback" not in done.stderr, done.stderr
        if done.returncode == 0:
            return attempt, json.loads((out / "run.json").read_text())
        assert done.returncode == 1, done.stderr
    raise AssertionError(f"no complete run after 5 resumes: {done.stderr}")


def _cycle(graph: Path, out: Path, urls: dict[str, str], sig: int, within: float) -> tuple[list[str], int]:
    """One fresh run stopped by `sig` at a random moment, then resumed: its
    problems, and how many pages the resumed runs took from the state file."""
    for _ in range(5):  # a moment before the run ends on its own
        _served(urls)  # a clean log
        process = subprocess.Popen(_flow(graph, out), env=ENV, stderr=subprocess.PIPE, text=True)
        moment = RANDOM.uniform(0.0, within)
        time.sleep(moment)
        if process.poll() is None:
            process.send_signal(sig)
            _, stderr = process.communicate(timeout=30)
            # A signal in the instant after the run completed (its report written and its
            # pages let go, the process not yet gone) stops nothing: that moment is drawn again.
            if _status(out) != "completed":
                break
        else:
            process.communicate()
        within *= 0.7
    else:
        return ["every run ended before the signal"], 0
    problems = []
    if process.returncode != (-signal.SIGKILL if sig == signal.SIGKILL else 130):
        problems.append(f"stopped run exited {process.returncode}: {stderr[-500:]}")
    before = _served(urls)
    stopped = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {"ledger": {}}
    runs, report = _resume_until_complete(graph, out)
    after = _served(urls)
    for name in SOURCES:
        twice = before[name] & after[name]
        if len(twice) > CONCURRENCY:
            problems.append(
                f"{name}: {len(twice)} pages fetched whole twice (bound {CONCURRENCY}); "
                f"stopped run: {stopped['ledger'].get(name, {}).get('pages')}, {stopped.get('status')}; "
                f"resumed: {report['ledger'][name]['pages']}"
            )
    for name, row in report["ledger"].items():
        pages = row["pages"]
        if pages["unaccounted"] or any(row["records"]["unaccounted"].values()):
            problems.append(f"{name}: ledger unbalanced: {row}")
        kept = sum(1 for q in before[name] if q not in after[name])  # so they came from the file
        if pages["from_state"] < kept:
            problems.append(f"{name}: {pages['from_state']} pages from the state file, {kept} served before")
    twice = {name: len(before[name] & after[name]) for name in SOURCES}
    kept = {name: row["pages"]["from_state"] for name, row in report["ledger"].items()}
    print(f"signal {sig} after {moment:.2f}s: pages twice {twice}, from the state file {kept}, {runs} resumes")
    return problems, sum(kept.values())


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_resumed_runs_equal_an_uninterrupted_one(servers: dict[str, str], tmp_path: Path, sig: int) -> None:
    graph = _graph(tmp_path, servers)
    reference = tmp_path / "reference"
    started = time.monotonic()
    done = subprocess.run(_flow(graph, reference), env=ENV, capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    expected, letters = _table(reference), _letters(reference)
    assert len(expected) > 900 and letters  # the four catalogues, less their malformed records
    problems, resumed = [], 0
    for cycle in range(1, CYCLES + 1):
        out = tmp_path / f"cycle{cycle}"
        found, kept = _cycle(graph, out, servers, sig, seconds)
        resumed += kept > 0
        if not found and _table(out) != expected:
            found.append("the products table differs from the uninterrupted run's")
        if not found and not _written_by_the_last_run(out):
            found.append("rows not all written by the run that completed (run_id, processed_at)")
        if not found and _letters(out) != letters:
            found.append("the dead-letter store differs from the uninterrupted run's")
        if list(out.glob("state.db-pages-*.log")):
            found.append("the page log outlived the run that completed")
        problems += [f"cycle {cycle}: {p}" for p in found]
    assert not problems, "\n".join(problems)
    # The signal came while pages were being fetched often enough to prove something
    # (the rest of the moments fall in start-up, before the first page).
    assert resumed >= CYCLES // 2, f"only {resumed} of {CYCLES} cycles stopped a run that had fetched pages"
