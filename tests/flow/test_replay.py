"""`flow replay`: dead letters stored by a run pass through the fixed graph
again, into its database sink, proven against the mock's own truth.

A run whose `map:` reads the price from a field the API does not have sends
every record to the dead letters. With the map fixed, `flow replay` must
leave the sink holding exactly the ids the mock served as valid, and the
store holding exactly the records that are still bad (the catalogue's
malformed ones, with their new reason); none when the catalogue has none.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.mock_servers import ENV, mock_servers

MOCKS = {  # no faults: the run's pages all arrive; what is tested is the records
    "clean": {"style": "dummyjson", "products": 150, "seed": 5, "defect_rate": 0.0, "rate_limit": "off"},
    "defects": {"style": "dummyjson", "products": 150, "seed": 6, "defect_rate": 0.06, "rate_limit": "off"},
}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with mock_servers(tmp_path_factory.mktemp("mocks"), MOCKS) as urls:
        yield urls


def _graph(path: Path, url: str, mapping: dict[str, str]) -> Path:
    normalize: dict[str, Any] = {"preset": "dummyjson", **({"map": mapping} if mapping else {})}
    nodes = {
        "shop": {"pipe": [{"paginate": {"url": url, "style": "skip_limit", "page_size": 20}}, "fetch",
                          {"parse": {"schema": "dummyjson"}}, {"normalize": normalize}]},
        "products": {"from": "shop", "pipe": ["merge", {"dedupe": {"key": "id"}}]},
        "database": {"from": ["products", "*.dead_letters"], "pipe": [{"sqlite": {"path": "products.db"}}]},
        "files": {"from": "products", "pipe": [{"jsonl": {"path": "products.jsonl"}}]},
        "rejects": {"from": "*.dead_letters", "pipe": [{"collect": {"path": "dead_letters.jsonl"}}]},
    }  # fmt: skip
    path.write_text(yaml.safe_dump({"version": 1, "nodes": nodes}))
    return path


def _flow(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "flow", *args], env=ENV, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def _truth(url: str) -> dict[str, Any]:
    base = re.match(r"http://[^/]+", url).group(0)  # type: ignore[union-attr]
    with urllib.request.urlopen(f"{base}/__stats", timeout=10) as answer:
        return json.load(answer)["truth"]["served"]  # type: ignore[no-any-return]


def _store(out: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(out / "state.db") as db:
        return db.execute("SELECT endpoint, page, position, stage, run_id, raw FROM flow_dead_letters").fetchall()


def _ids(out: Path) -> set[str]:
    with sqlite3.connect(out / "products.db") as db:
        return {row[0] for row in db.execute("SELECT id FROM products")}


@pytest.mark.parametrize("mock", ["clean", "defects"])
def test_replay_after_fixing_the_map(servers: dict[str, str], tmp_path: Path, mock: str) -> None:
    url, out = servers[mock], tmp_path / "out"
    graph = _graph(tmp_path / "graph.yaml", url, {"price": "cost"})  # dummyjson has no `cost`
    run = _flow("run", str(graph), "--out", str(out), "-q")
    assert run.returncode == 0, run.stderr  # dead letters are accounted for, not lost
    truth = _truth(url)
    assert _ids(out) == set()
    stored = _store(out)
    assert len(stored) == truth["records"]  # every record served, as served
    assert len({row[4] for row in stored}) == 1  # stored by the run
    rejects, files = (out / "dead_letters.jsonl").read_text(), (out / "products.jsonl").read_text()

    _graph(graph, url, {})  # the map fixed: the preset's price
    replay = _flow("replay", str(graph), "--out", str(out))
    assert replay.returncode == 0, replay.stderr

    assert _ids(out) == {f"shop:{i}" for i in truth["valid"]}
    left = _store(out)
    malformed = {(m["index"] // 20, m["index"] % 20) for m in truth["malformed"]}
    assert {(page, position) for _, page, position, *_ in left} == malformed
    assert not {row[4] for row in left} & {row[4] for row in stored}  # stored again, with their new reasons
    if mock == "clean":
        assert left == []
    report = json.loads((out / "replay.json").read_text())
    assert report["replay"] == {"dead_letters": len(stored), "passed": len(stored) - len(left), "stayed": len(left)}
    records = report["ledger"]["shop"]["records"]
    assert records["received"] == len(stored) and records["dead_letters"] == len(left)
    assert records["unaccounted"] == {"database": 0}
    # File sinks are not rewritten by a replay (their side outputs reaching the database included).
    assert (out / "dead_letters.jsonl").read_text() == rejects and (out / "products.jsonl").read_text() == files
    assert "database" in replay.stdout

    again = _flow("replay", str(graph), "--out", str(out))  # what stays, stays
    assert again.returncode == 0, again.stderr
    assert [row[:4] for row in sorted(_store(out))] == [row[:4] for row in sorted(left)]


def test_replay_selects_by_source_and_reason(servers: dict[str, str], tmp_path: Path) -> None:
    url, out = servers["defects"], tmp_path / "out"
    graph = _graph(tmp_path / "graph.yaml", url, {"price": "cost"})
    assert _flow("run", str(graph), "--out", str(out), "-q").returncode == 0
    stored = len(_store(out))
    _graph(graph, url, {})
    nothing = _flow("replay", str(graph), "--out", str(out), "--reason", "no such reason")
    assert nothing.returncode == 0 and "none match" in nothing.stderr and len(_store(out)) == stored
    other = _flow("replay", str(graph), "--out", str(out), "--source", "elsewhere")
    assert other.returncode == 0 and len(_store(out)) == stored
    chosen = _flow("replay", str(graph), "--out", str(out), "--source", "shop", "--reason", "price missing")
    assert chosen.returncode == 0, chosen.stderr
    assert 0 < len(_store(out)) < stored


def test_dead_letters_stay_when_no_database_sink_takes_their_node_s_output(servers: dict[str, str], tmp_path: Path) -> None:
    """Products to a file, dead letters to a database: a replay would write
    the records that pass nowhere (and rewrite the file), so it does not run."""
    url, out = servers["clean"], tmp_path / "out"
    graph = _graph(tmp_path / "graph.yaml", url, {"price": "cost"})
    document = yaml.safe_load(graph.read_text())
    document["nodes"]["database"]["from"] = "*.dead_letters"
    graph.write_text(yaml.safe_dump(document))
    assert _flow("run", str(graph), "--out", str(out), "-q").returncode == 0
    stored, files = _store(out), (out / "products.jsonl").read_text()
    document["nodes"]["shop"]["pipe"][3] = {"normalize": {"preset": "dummyjson"}}
    graph.write_text(yaml.safe_dump(document))
    replay = _flow("replay", str(graph), "--out", str(out))
    assert replay.returncode == 1
    why = "no database sink (sqlite, postgres) takes the output of node 'shop'"
    assert f"{len(stored)} dead letters stay in the store: {why}" in replay.stderr
    assert _store(out) == stored and (out / "products.jsonl").read_text() == files
    assert not (out / "replay.json").exists()
