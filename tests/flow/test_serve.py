"""`flow serve` with the jobs family, end to end: the service and the vendor
mocks in processes of their own, judged from the vendors' own logs and the
job store. Every job submitted ends complete or failed with a reason,
once; each vendor's rate limit holds at the vendor; forged, unsigned,
replayed and unknown-job webhooks change nothing; a kill in the middle
loses no job; personal data never reaches the store or an answer; a stop
drains, answers 503 meanwhile, and leaves the rest pending."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mocks.evidence import max_per_window
from tests.json_server import free_port

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
SECRET = "test-vendor-secret"
GRAPH = """\
version: 1
run: {grace: 3s, out: out}
nodes:
  jobs:
    pipe:
      - jobs: {max_pending: MAX}
      - vendor:
          concurrency: CONC
          default: quick
          vendors:
            quick: {url: "QUICK", rate_limit: 8/s, retry: {retries: 3, backoff: 0.05s, max: 0.2s}}
            later: {url: "LATER", mode: async, rate_limit: 5/s, secret: SECRET, callback_timeout: 3s,
                    retry: {retries: 3, backoff: 0.05s, max: 0.2s}}
      - redact
      - job_store
"""
PII = {"name": "Ada Lovelace", "email": "ada.lovelace@example.com", "phone": "+44 20 7946 0958"}


def _request(url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null"), err.headers


@contextlib.contextmanager
def vendors(*flags: str) -> Iterator[dict[str, str]]:
    """`flow mocks` with a sync and an async vendor: {style: api url}."""
    process = subprocess.Popen(
        [sys.executable, "-m", "flow", "mocks", "--style", "sync_vendor", "--style", "async_vendor",
         "--secret", SECRET, *flags], stdout=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    try:
        urls = {}
        assert process.stdout is not None
        while len(urls) < 2:
            line = process.stdout.readline()
            assert line, "flow mocks ended before it served"
            _, style, url, *_ = line.split()
            urls[style] = url
        yield urls
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=10)


class Service:
    def __init__(self, tmp_path: Path, urls: dict[str, str], max_pending: int = 10_000, conc: int = 64) -> None:
        self.dir, self.port = tmp_path, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        text = GRAPH.replace("QUICK", urls["sync_vendor"]).replace("LATER", urls["async_vendor"])
        text = text.replace("SECRET", SECRET).replace("MAX", str(max_pending)).replace("CONC", str(conc))
        (tmp_path / "s.yaml").write_text(text)
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> Service:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flow", "serve", "s.yaml", "--port", str(self.port)], cwd=self.dir,
            stderr=subprocess.PIPE, text=True, env=ENV,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if _request(self.url + "/health")[0] == 200:
                    return self
            time.sleep(0.05)
        raise AssertionError("flow serve did not start")

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        assert self.process is not None
        self.process.send_signal(sig)
        _, stderr = self.process.communicate(timeout=20)
        return self.process.returncode, stderr

    def submit(self, payload: Any) -> str:
        status, body, _ = _request(self.url + "/jobs", payload)
        assert status == 202, body
        return str(body["request_id"])

    def wait_all(self, ids: list[str], within: float = 30) -> dict[str, dict[str, Any]]:
        deadline, done = time.monotonic() + within, {}
        while time.monotonic() < deadline:
            for rid in ids:
                if rid not in done:
                    job = _request(f"{self.url}/jobs/{rid}")[1]
                    if job["status"] in ("complete", "failed"):
                        done[rid] = job
            if len(done) == len(ids):
                return done
            time.sleep(0.1)
        raise AssertionError(f"{len(ids) - len(done)} jobs did not end within {within} s")

    def rows(self) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.dir / "out" / "jobs.db")) as db:
            return db.execute("SELECT request_id, status, payload, result, error FROM jobs").fetchall()


def _stats(url: str) -> dict[str, Any]:
    base = url.rsplit("/v1/", 1)[0]
    return _request(base + "/__stats")[1]


def test_every_job_ends_once_and_each_vendors_limit_holds_at_the_vendor(tmp_path):
    with vendors("--error-rate", "0.15", "--failure-rate", "0.1", "--callback-duplicate-rate", "0.3",
                 "--callback-loss-rate", "0.1", "--callback-delay", "20ms..300ms", "--latency", "5ms..30ms",
                 "--rate-limit", "8/s") as urls:  # fmt: skip
        service = Service(tmp_path, urls).start()
        ids = [service.submit({"vendor": ["quick", "later", "later"][i % 3], "order": i}) for i in range(45)]
        ids.append(service.submit({"vendor": "nobody", "order": 99}))
        done = service.wait_all(ids)
        code, stderr = service.stop()
        quick, later = _stats(urls["sync_vendor"]), _stats(urls["async_vendor"])
    assert code == 0, stderr
    failed = {rid: job["error"] for rid, job in done.items() if job["status"] == "failed"}
    assert all(failed.values())  # every failure says why
    assert failed[ids[-1]].startswith("no vendor 'nobody'")
    # Each job whose callback the vendor lost (its own record) failed waiting for it.
    lost = [job["request_id"] for job in later["jobs"] if job["callback"] == "lost"]
    assert all("no callback within 3 s" in failed.get(rid, "") for rid in lost), lost
    assert sum(job["status"] == "complete" for job in done.values()) >= 25
    rows = service.rows()
    assert len(rows) == 46 and {r[1] for r in rows} <= {"complete", "failed"}
    report = json.loads((tmp_path / "out" / "serve.json").read_text())
    sink = report["nodes"]["jobs"]["counters"]
    assert sink.get("jobs_complete", 0) + sink.get("jobs_failed", 0) == 46  # each ended once, in the store
    assert sink.get("jobs_complete", 0) == sum(job["status"] == "complete" for job in done.values())
    for stats, limit in ((quick, 8), (later, 5)):
        sends = [r["t"] for r in stats["requests"] if r["path"].startswith("/v1/")]
        assert sends and max_per_window(sends) <= limit, (limit, max_per_window(sends))
        assert all(r["status"] != 429 for r in stats["requests"])  # the limiter kept under it


def _signed(body: bytes, at: int, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), str(at).encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Flow-Timestamp": str(at), "X-Flow-Signature": f"sha256={digest}", "Content-Type": "application/json"}


def test_forged_unsigned_replayed_and_unknown_webhooks_change_nothing(tmp_path):
    with vendors("--callback-delay", "30s", "--rate-limit", "50/s") as urls:  # its own callback comes too late
        service = Service(tmp_path, urls).start()
        rid = service.submit({"vendor": "later"})
        time.sleep(0.3)  # sent, and waiting for its callback
        hook = service.url + "/vendor-webhook/later"
        body = json.dumps({"request_id": rid, "status": "complete", "result": {"forged": True}}).encode()
        now = int(time.time())
        refused = [
            _request(hook, body, {"Content-Type": "application/json"}),  # unsigned
            _request(hook, body, _signed(body, now, secret="not-the-secret")),  # forged
            _request(hook, body, _signed(body, now - 3600)),  # replayed an hour later
            _request(hook, body.replace(b'"forged": true', b'"forged": false'), _signed(body, now)),  # altered
        ]
        unknown_body = json.dumps({"request_id": "no-such-job", "status": "complete"}).encode()
        unknown = _request(hook, unknown_body, _signed(unknown_body, now))
        other = _request(service.url + "/vendor-webhook/quick", body, _signed(body, now))  # not async
        during = _request(f"{service.url}/jobs/{rid}")[1]
        genuine = _request(hook, body, _signed(body, now))
        after = service.wait_all([rid])[rid]
        duplicate = _request(hook, json.dumps({"request_id": rid, "status": "failed", "error": "x"}).encode(),
                             _signed(json.dumps({"request_id": rid, "status": "failed", "error": "x"}).encode(), now))  # fmt: skip
        final = _request(f"{service.url}/jobs/{rid}")[1]
        service.stop()
    assert [r[0] for r in refused] == [401, 401, 401, 401]
    assert "unsigned" in refused[0][1]["error"] and "does not verify" in refused[1][1]["error"]
    assert " s off: a replay" in refused[2][1]["error"] and "does not verify" in refused[3][1]["error"]
    assert unknown[0] == 404 and other[0] == 404
    assert during["status"] == "running"  # nothing refused changed it
    assert genuine[0] == 200 and after["status"] == "complete" and after["result"] == {"forged": True}
    assert duplicate[0] == 200 and duplicate[1]["duplicate"] is True
    assert final == after  # a duplicate changes nothing


def test_a_kill_in_the_middle_loses_no_job(tmp_path):
    with vendors("--latency", "50ms..150ms", "--rate-limit", "10/s", "--callback-delay", "50ms..200ms") as urls:
        service = Service(tmp_path, urls).start()
        ids = [service.submit({"vendor": ["quick", "later"][i % 2], "order": i}) for i in range(40)]
        time.sleep(1.0)
        code, _ = service.stop(signal.SIGKILL)  # no drain, no release: jobs left running
        states = [r[1] for r in service.rows()]
        assert code == -signal.SIGKILL and "running" in states and "complete" in states
        service.start()
        done = service.wait_all(ids, within=40)
        service.stop()
        quick, later = _stats(urls["sync_vendor"]), _stats(urls["async_vendor"])
    assert sorted(done) == sorted(ids) and len(service.rows()) == 40
    assert sum(job["status"] == "complete" for job in done.values()) >= 36
    # Resumed jobs were sent again with their request id; the vendors saw each job, repeats counted.
    seen = {j["request_id"] for j in quick["jobs"]} | {j["request_id"] for j in later["jobs"]}
    assert seen == set(ids)


def test_personal_data_never_reaches_the_store_or_an_answer(tmp_path):
    with vendors("--rate-limit", "50/s", "--callback-delay", "10ms..50ms") as urls:
        service = Service(tmp_path, urls).start()
        ids = [service.submit({"vendor": vendor, "customer": {**PII}, "note": f"reach me at {PII['email']}",
                               "contacts": {PII["email"]: "primary", PII["phone"]: "mobile"},  # in keys too
                               "records": [{"id": 1, **PII}]}) for vendor in ("quick", "later")]  # fmt: skip
        answers = [json.dumps(job) for job in service.wait_all(ids).values()]
        health = json.dumps(_request(service.url + "/health")[1])
        service.stop()
    stored = b"".join(path.read_bytes() for path in (tmp_path / "out").glob("jobs.db*"))  # the WAL too
    for value in PII.values():
        assert value.encode() not in stored
        assert all(value not in text for text in [*answers, health])
    assert all('"status": "complete"' in text for text in answers)
    assert b"reach me at [redacted]" in stored  # cleaned, not dropped


def test_a_stop_drains_answers_503_meanwhile_and_leaves_the_rest_pending(tmp_path):
    with vendors("--latency", "300ms", "--rate-limit", "5/s") as urls:
        service = Service(tmp_path, urls, max_pending=5, conc=1).start()
        ids: list[str] = []
        for i in range(40):  # one job at the vendor, 8 claimed, then 5 waiting: full
            status, body, headers = _request(service.url + "/jobs", {"order": i})
            if status != 202:
                break
            ids.append(body["request_id"])
        assert status == 503 and headers["Retry-After"] == "1" and "busy: 5 jobs waiting" in body["error"]
        assert len(ids) <= 1 + 8 + 5
        assert service.process is not None
        service.process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        during = _request(service.url + "/jobs", {"order": 100})
        _, stderr = service.process.communicate(timeout=20)  # one signal: it drains, and ends by itself
        code = service.process.returncode
        rows = {r[0]: r[1] for r in service.rows()}
    assert during[0] == 503 and "stopping" in during[1]["error"]
    assert code == 0, stderr
    assert set(rows) == set(ids)
    assert set(rows.values()) <= {"complete", "failed", "pending"} and "pending" in rows.values()


def test_flow_run_of_a_service_graph_says_to_serve_it(tmp_path):
    (tmp_path / "s.yaml").write_text(GRAPH.replace("QUICK", "http://127.0.0.1:9/v1/process").replace(
        "LATER", "http://127.0.0.1:9/v1/jobs").replace("SECRET", SECRET).replace("MAX", "10").replace("CONC", "1"))
    result = subprocess.run([sys.executable, "-m", "flow", "run", "s.yaml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, env=ENV)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == "flow: error: node 'jobs' (jobs) serves HTTP: run this graph with `flow serve s.yaml`\n"
    assert not (tmp_path / "out").exists()  # nothing ran


def test_a_stop_fails_no_job_that_waits_for_its_vendor_and_a_restart_ends_them(tmp_path):
    """30 jobs against an 8/s limit: at the stop most wait for a send slot.
    They are not failed (nothing was sent): back to pending, ended by the
    next start."""
    with vendors("--latency", "5ms..20ms", "--rate-limit", "20/s") as urls:
        service = Service(tmp_path, urls).start()
        ids = [service.submit({"vendor": "quick", "order": i}) for i in range(30)]
        time.sleep(0.6)
        code, stderr = service.stop(signal.SIGTERM)
        states = [r[1] for r in service.rows()]
        assert code == 0, stderr
        assert "failed" not in states and states.count("pending") >= 10 and "complete" in states
        service.start()
        done = service.wait_all(ids)
        service.stop()
    assert all(job["status"] == "complete" for job in done.values())


def test_a_payload_too_deep_to_clean_is_refused_and_a_result_too_deep_fails_its_job_only(tmp_path):
    from stages.jobs.items import JobResult
    from stages.records.redact import PERSONAL_KEYS, _cleaned_result, personal

    deep: Any = "x"
    for _ in range(200):
        deep = {"a": deep}
    with vendors("--rate-limit", "50/s") as urls:
        service = Service(tmp_path, urls).start()
        status, body, _ = _request(service.url + "/jobs", {"vendor": "quick", "records": [deep]})
        after = service.submit({"vendor": "quick", "order": 1})  # the service carries on
        assert service.wait_all([after])[after]["status"] == "complete"
        service.stop()
    assert status == 400 and body["error"] == "the payload is nested deeper than 64 levels"

    class Counting:
        def count(self, *args: Any) -> None:
            pass

    failed = _cleaned_result(JobResult("r", "complete", "v", {"records": [deep]}), personal(PERSONAL_KEYS), "-",
                             Counting())  # fmt: skip
    assert failed.status == "failed" and failed.result is None
    assert failed.error == "the vendor's result could not be cleaned (nested deeper than 64 levels), so it was not kept"


def test_a_second_service_on_one_store_refuses_and_a_service_that_ends_by_itself_exits_1(tmp_path):
    with vendors("--rate-limit", "50/s") as urls:
        first = Service(tmp_path, urls).start()
        second = Service(tmp_path, urls)
        assert second.port != first.port
        second.process = subprocess.Popen(
            [sys.executable, "-m", "flow", "serve", "s.yaml", "--port", str(second.port)], cwd=tmp_path,
            stderr=subprocess.PIPE, text=True, env=ENV,
        )  # fmt: skip
        _, stderr = second.process.communicate(timeout=30)
        first.stop()
    assert second.process.returncode == 1
    assert "flow serve: the service ended by itself" in stderr
    assert "another flow serve uses this job store" in stderr
