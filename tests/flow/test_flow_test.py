"""`flow run --record DIR` and `flow test`: recorded traffic, played offline.

Recorded from the embedded mocks (with faults), the recording plays back to
the same output and `flow test` passes; a wrong expectation or a changed
graph fails with a readable report; a request the recording lacks fails;
secrets never reach the recording; and `flow test` opens no network
connection at all, proved by an audit hook in its process that sees every
socket connect and name lookup (the same hook sees the recording run's)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "SHOP_KEY": "s3cr3t-key-value"}
GRAPH = """\
version: 1
run: {deadline: 60s}
mocks:
  shop: {style: dummyjson, products: 130, latency: 1ms..10ms, error_rate: 0.1, truncate_rate: 0.05}
  bare: {style: platzi, products: 70, latency: 1ms..10ms}
nodes:
  shop:
    pipe:
      - paginate: {url: "${mocks.shop.url}/products", style: auto, headers: {x-api-key: "${SHOP_KEY}"},
                   params: {token: "${SHOP_KEY}"}}
      - rate_limit: {rate: 50/s}
      - fetch: {retry: {retries: 5, backoff: 0.01s, max: 0.05s}}
      - parse
      - normalize: {map: auto}
  bare:
    pipe:
      - paginate: {url: "${mocks.bare.url}/api/v1/products", style: offset}
      - fetch
      - parse
      - normalize: {MAP}
  products:
    from: [shop, bare]
    pipe: [merge, {dedupe: {key: id}}]
  out:
    from: products
    pipe: [{summary_json: {path: summary.json}}]
TESTS"""
TESTS = """\
tests:
  sources:
    shop: {pages: 7, records: 130, dead_letters: [0, 10], failed_pages: 0}
    bare: {records: 70}
  errors: 0
  fields: [id, title, price, category, timestamp]
  samples:
    - {id: "shop:1", title: "Modern Ceramic Table", price: 1408.37, category: furniture}
"""
# Every socket connect and name lookup of the process, appended to a file.
HOOK = """\
import sys
def _hook(event, args, _log=open(sys.argv.pop(1), "a")):
    if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname"):
        _log.write(f"{event} {args[1:]!r}\\n"); _log.flush()
sys.addaudithook(_hook)
from flow.cli import main
sys.exit(main(sys.argv[1:]))
"""


def flow(*args: str, cwd: Path, audit: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", HOOK, str(audit)] if audit else [sys.executable, "-m", "flow"]
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, timeout=90, env=ENV)


def _write(tmp_path: Path, tests: str = TESTS, normalize: str = "preset: platzi") -> None:
    (tmp_path / "g.yaml").write_text(GRAPH.replace("TESTS", tests).replace("MAP", normalize))


def _recorded(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    _write(tmp_path)
    run = flow("run", "g.yaml", "--record", "fixtures", "--out", "o", "--no-progress", cwd=tmp_path,
               audit=tmp_path / "run-sockets.log")  # fmt: skip
    assert run.returncode == 0, run.stderr
    return run


def test_a_recording_plays_back_offline_and_passes(tmp_path):
    _recorded(tmp_path)
    assert sorted(p.name for p in (tmp_path / "fixtures").iterdir()) == ["bare.jsonl.gz", "shop.jsonl.gz"]
    update = flow("test", "g.yaml", "--update", cwd=tmp_path)
    assert update.returncode == 0, update.stdout + update.stderr
    assert "snapshot written: fixtures/snapshot.jsonl (" in update.stdout
    result = flow("test", "g.yaml", cwd=tmp_path, audit=tmp_path / "test-sockets.log")
    assert result.returncode == 0, result.stdout + result.stderr
    # The same products as the run that recorded (200 records, less dead letters and duplicates).
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert 180 < len(summary["products"]) < 200
    assert result.stdout.startswith(f"flow test g.yaml: passed: {len(summary['products'])} records of 'products'")
    snapshot = [json.loads(line) for line in (tmp_path / "fixtures" / "snapshot.jsonl").read_text().splitlines()]
    assert sorted(p["id"] for p in snapshot) == sorted(p["id"] for p in summary["products"])
    # No network: the hook saw the recording run connect, and flow test never.
    assert "socket.connect" in (tmp_path / "run-sockets.log").read_text()
    assert not (tmp_path / "test-sockets.log").exists() or not (tmp_path / "test-sockets.log").read_text()


def test_a_wrong_expectation_and_a_changed_graph_fail_readably(tmp_path):
    _recorded(tmp_path)
    assert flow("test", "g.yaml", "--update", cwd=tmp_path).returncode == 0
    _write(tmp_path, TESTS.replace("bare: {records: 70}", "bare: {records: 71}").replace(
        "price: 1408.37", "price: 1.5"))  # fmt: skip
    wrong = flow("test", "g.yaml", cwd=tmp_path)
    assert wrong.returncode == 1
    n = len(json.loads((tmp_path / "o" / "summary.json").read_text())["products"])
    assert wrong.stdout.splitlines() == [
        f"flow test g.yaml: FAILED (2 checks), {n} records of 'products'",
        "  sources.bare.records: expected 71, got 70",
        '  samples[0]: no record holds {"id": "shop:1", "title": "Modern Ceramic Table", "price": 1.5,'
        ' "category": "furniture"}; the closest differs in',
        "      price: expected 1.5, got 1408.37",
    ]
    # The graph changes (platzi's prices taken as cents): the snapshot shows each record that changed.
    _write(tmp_path, normalize="preset: platzi, price_in_cents: true")
    changed = flow("test", "g.yaml", cwd=tmp_path)
    assert changed.returncode == 1
    lines = changed.stdout.splitlines()
    assert lines[1] == "  snapshot: the output records differ from fixtures/snapshot.jsonl (--update accepts them):"
    removed = [json.loads(line[5:]) for line in lines if line.startswith("    -{")]
    added = [json.loads(line[5:]) for line in lines if line.startswith("    +{")]
    assert removed and added and all(r["source"] == "bare" for r in removed + added)
    before, after = {r["id"]: r["price"] for r in removed}, {a["id"]: a["price"] for a in added}
    both = before.keys() & after.keys()
    assert len(both) >= len(added) - 1  # the diff is cut at 40 lines: a pair may be split
    assert all(before[i] == round(after[i] * 100, 2) for i in both)  # the prices, now as cents
    assert lines[-1].startswith("    ... ") and lines[-1].endswith(" more lines")


def test_a_request_not_recorded_fails_the_test(tmp_path):
    _recorded(tmp_path)
    path = tmp_path / "fixtures" / "bare.jsonl.gz"
    with gzip.open(path, "rt") as f:
        lines = f.read().splitlines()
    dropped = json.loads(lines[1])["key"]
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines[:1] + lines[2:]) + "\n")
    result = flow("test", "g.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert f"  recording: 1 requests not recorded, e.g. {dropped!r}" in result.stdout
    assert "  ledger: 1 error records: pages or items that failed for good, walks cut short" in result.stdout


def test_secrets_never_reach_the_recording_and_it_plays_with_another_value(tmp_path):
    _recorded(tmp_path)
    with gzip.open(tmp_path / "fixtures" / "shop.jsonl.gz", "rt") as f:
        text = f.read()
    assert "s3cr3t-key-value" not in text
    assert "token=${SHOP_KEY}" in text  # the query's secret, named
    result = subprocess.run([sys.executable, "-m", "flow", "test", "g.yaml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=90, env={**ENV, "SHOP_KEY": "another"})  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_recording_is_a_clear_usage_error(tmp_path):
    _write(tmp_path)
    result = flow("test", "g.yaml", "--fixtures", "nowhere", cwd=tmp_path)
    assert result.returncode == 2
    assert "nowhere: no recording here (flow run GRAPH --record nowhere)" in result.stderr


def test_flow_test_writes_nothing_outside_its_directory_and_leaves_network_sinks_out(tmp_path):
    """A graph that also writes to PostgreSQL and to an absolute path: the
    test connects to no database and writes nothing outside its --out."""
    _recorded(tmp_path)
    elsewhere = tmp_path / "elsewhere" / "prod.db"
    extra = (
        "  warehouse:\n    from: products\n    pipe: [{postgres: {dsn: \"postgresql://flow@127.0.0.1:9/flow\"}}]\n"
        f"  local:\n    from: products\n    pipe: [{{sqlite: {{path: \"{elsewhere}\"}}}}]\n"
    )
    _write(tmp_path, tests=extra + TESTS)
    result = flow("test", "g.yaml", "--out", "t", cwd=tmp_path, audit=tmp_path / "sockets.log")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "flow test: node 'warehouse' left out: its sink writes over the network" in result.stderr
    assert not elsewhere.exists() and (tmp_path / "t" / str(elsewhere).lstrip("/")).exists()
    assert not (tmp_path / "sockets.log").exists() or not (tmp_path / "sockets.log").read_text()


def test_the_recording_names_secrets_a_server_echoes_and_snapshots_keep_any_text(tmp_path):
    from flow.cli.test import _snapshot
    from flow.tape import Tape

    tape = Tape(tmp_path / "rec", "record", {"s3cr3t-key-value": "${SHOP_KEY}"})
    exchange = {"url": "http://h/p?token=s3cr3t-key-value", "status": 200,
                "headers": {"Link": "<http://h/p?page=2&token=s3cr3t-key-value>; rel=next", "X-Api-Key": "k"},
                "body": '{"echo": "s3cr3t-key-value"}'}  # fmt: skip
    assert "s3cr3t" not in json.dumps(tape.redacted(exchange))
    assert tape.redacted(exchange)["headers"]["X-Api-Key"] == "<redacted>"
    lines = ['{"id": "a", "title": "line\\u2028separator \u2028 and \u0085 next line"}']
    path = tmp_path / "snapshot.jsonl"
    assert _snapshot(path, lines, update=True) == [] and _snapshot(path, lines, update=False) == []


def test_a_wrong_tests_block_is_a_located_error(tmp_path):
    _write(tmp_path, TESTS.replace("bare: {records: 70}", "bare: {recordz: 70}"))
    result = flow("validate", "g.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "g.yaml:30:12: unknown key 'recordz'; hint: did you mean 'records'?\n"
    _write(tmp_path, TESTS.replace("errors: 0", "errors: [5, 1]"))
    result = flow("validate", "g.yaml", cwd=tmp_path)
    assert result.stderr == "g.yaml:31:11: errors: [min, max] with min above max: [5, 1]\n"
