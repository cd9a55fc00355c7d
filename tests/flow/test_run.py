"""`flow run` end to end in a subprocess: the report, exit codes, and a
SIGINT mid-run that drains, writes a valid partial report and exits 130."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "error::ResourceWarning"}


def flow(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flow", *args], cwd=cwd, capture_output=True, text=True, timeout=60, env=ENV
    )


def test_run_writes_the_report_and_outputs(tmp_path):
    (tmp_path / "g.yaml").write_text(
        "version: 1\nmocks: {shop: {style: platzi, products: 30}}\nnodes:\n"
        "  a: {pipe: [{sequence: {items: 45, batch: 10}}]}\n"
        "  out: {from: a, pipe: [{collect: {path: nums.jsonl}}]}\n"
    )
    result = flow("run", "g.yaml", "--out", "o", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    table, status = result.stdout.splitlines()[:2], result.stdout.splitlines()[2]
    assert table == [
        "source  pages  records  products  dead  retries  errors  breaker",
        "a         0/5        0         0     0        0       0   closed",
    ]
    assert status.startswith("completed: 5 items reached 1 sinks; 0 errors in ")
    assert status.endswith("s; outputs: o/nums.jsonl, o/run.json")
    report = json.loads((tmp_path / "o" / "run.json").read_text())
    assert report["status"] == "completed" and report["errors"] == []
    assert report["nodes"]["out"]["stages"] == [{"stage": "collect", "items_out": 5, "errors": 0}]
    lines = (tmp_path / "o" / "nums.jsonl").read_text().splitlines()
    assert [json.loads(line)["n"] for line in lines] == list(range(45))
    assert result.stderr == ""


def test_deadline_exits_1_with_a_partial_report(tmp_path):
    (tmp_path / "g.yaml").write_text(
        "version: 1\nrun: {deadline: 300ms}\nnodes:\n"
        "  a: {pipe: [{sequence: {items: 1000000000, batch: 1}}]}\n"
        "  out: {from: a, pipe: [collect]}\n"
    )
    result = flow("run", "g.yaml", "--out", "o", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    report = json.loads((tmp_path / "o" / "run.json").read_text())
    assert report["status"] == "deadline"
    assert report["errors"][0]["error"] == "deadline_exceeded"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_drains_writes_a_partial_report_and_exits_130(tmp_path, sig):
    (tmp_path / "g.yaml").write_text(
        "version: 1\nrun: {grace: 5s}\nnodes:\n"
        "  a: {pipe: [{sequence: {items: 1000000000, batch: 1}}]}\n"
        "  out: {from: a, pipe: [{collect: {path: nums.jsonl}}]}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "flow", "run", "g.yaml", "--out", "o"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        output = tmp_path / "o" / "nums.jsonl"
        deadline = time.monotonic() + 20
        while not (output.exists() and output.stat().st_size > 0):  # wait until items flow
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert out.splitlines()[-1].startswith("interrupted: ")
    assert err == ""  # no "Task exception was never retrieved", no ResourceWarning, no traceback
    report = json.loads((tmp_path / "o" / "run.json").read_text())
    assert report["status"] == "interrupted"
    produced = report["nodes"]["a"]["stages"][0]["items_out"]
    assert produced == report["nodes"]["out"]["stages"][0]["items_out"] > 0
    assert len((tmp_path / "o" / "nums.jsonl").read_text().splitlines()) == produced


def test_live_progress_on_a_terminal(tmp_path):
    """On a terminal the display redraws in place on stderr; the table and
    the status line still go to stdout."""
    import pty

    (tmp_path / "g.yaml").write_text(
        "version: 1\nnodes:\n  a: {pipe: [{sequence: {items: 200000, batch: 1}}]}\n  out: {from: a, pipe: [collect]}\n"
    )
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "flow", "run", "g.yaml", "--out", "o"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=slave,
            text=True,
            timeout=60,
            env=ENV,
        )
        os.close(slave)
        drawn = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0
    assert b"products/s" in drawn and b"source  pages" in drawn
    assert proc.stdout.splitlines()[-1].startswith("completed: ")


LOSSY = """\
version: 1
run: {deadline: 30s, on_loss: ON_LOSS}
mocks: {shop: {style: platzi, products: 30, rate_limit: off}}
nodes:
  gone: {pipe: [{paginate: {url: "${mocks.shop.url}/nope", style: offset}}, fetch, {parse: {schema: platzi}}]}
  shop: {pipe: [{paginate: {url: "${mocks.shop.url}/api/v1/products", style: offset}}, fetch, {parse: {schema: platzi}}]}
  out: {from: [gone, shop], pipe: [collect]}
"""


@pytest.mark.parametrize(("on_loss", "code"), [("fail", 1), ("warn", 0)])
def test_a_run_that_lost_a_source_says_so_and_exits_1(tmp_path, on_loss, code):
    """An endpoint that answers 404: the run completes, the other source is
    whole, and the loss decides the exit code (run.on_loss: warn relaxes it)."""
    (tmp_path / "g.yaml").write_text(LOSSY.replace("ON_LOSS", on_loss))
    result = flow("run", "g.yaml", "--out", "o", cwd=tmp_path)
    assert result.returncode == code, result.stderr
    report = json.loads((tmp_path / "o" / "run.json").read_text())
    assert report["status"] == "completed"
    errors = [e["error"] for e in report["errors"]]
    assert errors.count("pagination_stopped") == 1 and set(errors) == {"http_404", "pagination_stopped"}
    assert len(errors) <= 4 + 4 + 1  # it gave up after 4 failures in a row (with up to 4 more in flight)
    assert report["lost"] == [f"{len(errors)} error records: pages or items that failed for good, walks cut short",
                              "source 'gone' produced nothing"]  # fmt: skip
    assert report["nodes"]["shop"]["counters"]["records"] == 30  # the other source is whole
    assert f"flow: lost: {len(errors)} error records" in result.stderr
