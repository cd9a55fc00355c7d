"""A budget kept in Redis (`rate_limit: {name, store: redis://...}`): one
budget for separate `flow run` processes, judged from the servers' own
logs, against a real redis-server on loopback (Debian's, installed by
.ci/debian). The control, the same two runs without the store, goes over
the limit, so the check can fail. A store that dies mid-run fails the
pages it would have sent, loudly, and sends nothing unrecorded."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

import pytest
import yaml

from flow.problems import SpecError
from flow.registry import default_registry
from flow.spec import parse_spec
from mocks.evidence import max_per_window
from stages.http.leases import LeaseLimiter
from stages.http.redis_budget import RedisBook


class Redis(NamedTuple):
    url: str
    process: subprocess.Popen[str]


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    """A redis-server of its own on 127.0.0.1, nothing written to disk;
    ready once it says so."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is missing: .ci/debian installs it (make test)"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                               "no", "--dir", str(tmp_path)], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert server.stdout is not None
        for line in server.stdout:
            if "Ready to accept connections" in line:
                break
        else:
            raise AssertionError("redis-server ended before it was ready")
        # Its log, read on to its end (a full pipe would stall it), then closed.
        threading.Thread(target=_drain, args=(server.stdout,), daemon=True).start()
        yield Redis(f"redis://127.0.0.1:{port}/0", server)
    finally:
        server.kill()
        server.wait(timeout=10)


def _drain(pipe: IO[str]) -> None:
    with pipe:
        pipe.read()


def _graph(url: str, path: str, style: str, store: str | None) -> str:
    budget: dict[str, Any] = {"name": "vendor", "rate": "5/s"}
    if store is not None:
        budget["store"] = store
    paging = {"dummyjson": "skip_limit", "platzi": "offset"}[style]
    nodes = {
        "shop": {"pipe": [{"paginate": {"url": url + path, "style": paging}}, {"rate_limit": budget},
                          {"fetch": {"retry": {"retries": 0}}}, {"parse": {"schema": style}},
                          {"normalize": {"preset": style}}]},
        "out": {"from": ["shop", "*.errors"], "pipe": [{"summary_json": {"path": "summary.json"}}]},
    }  # fmt: skip
    return yaml.safe_dump({"version": 1, "run": {"deadline": "60s"}, "nodes": nodes}, sort_keys=False)


async def _flow_run(work: Path, graph: str) -> asyncio.subprocess.Process:
    _write(work, graph)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FLOW__"))}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flow", "run", "g.yaml", "--out", "o", "-q", cwd=work, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip


def _write(work: Path, graph: str) -> None:
    work.mkdir()
    (work / "g.yaml").write_text(graph)


def _sends(servers: list[Any]) -> list[float]:
    """Every request both servers logged, on one clock (seconds before now)."""
    stats = [server.stats() for server in servers]
    return [r["t"] - s["server"]["uptime"] for s in stats for r in s["requests"]]


@pytest.mark.parametrize("kept", [True, False])
async def test_two_runs_share_one_budget_kept_in_redis(start_mock, redis, tmp_path, kept):
    """Two `flow run` processes, each against its own shop, one budget of
    5/s named `vendor` in one store: about 60 requests, and no sliding
    second of the two servers' logs together holds a 6th."""
    a = await start_mock(style="dummyjson", products=600, rate_limit="50/s")
    b = await start_mock(style="platzi", products=560, rate_limit="50/s")
    store = redis.url if kept else None
    runs = [await _flow_run(tmp_path / "a", _graph(a.url, "/products", "dummyjson", store)),
            await _flow_run(tmp_path / "b", _graph(b.url, "/api/v1/products", "platzi", store))]  # fmt: skip
    outputs = [await asyncio.wait_for(run.communicate(), timeout=90) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    sends = _sends([a, b])
    assert 58 <= len(sends) <= 66
    assert (max_per_window(sends) <= 5) is kept
    for work, shop in (("a", a), ("b", b)):  # every valid product each shop served, as in a run alone
        summary = json.loads((tmp_path / work / "o" / "summary.json").read_text())
        valid = {f"shop:{sid}" for sid in shop.stats()["truth"]["served"]["valid"]}
        assert {p["id"] for p in summary["products"]} == valid


async def test_a_store_that_dies_fails_the_pages_loudly_and_sends_nothing_unrecorded(
    start_mock, redis, tmp_path
):  # fmt: skip
    """redis-server killed 2 s into the run: the pages not yet sent fail as
    budget_unavailable (nothing sent for them), the run exits 1 and says
    why, and the server saw no second over the budget."""
    shop = await start_mock(style="dummyjson", products=600, rate_limit="50/s")
    run = await _flow_run(tmp_path / "a", _graph(shop.url, "/products", "dummyjson", redis.url))
    await asyncio.sleep(2.0)  # a real process's run: some pages sent, most not yet
    redis.process.send_signal(signal.SIGKILL)
    await asyncio.to_thread(redis.process.wait)
    died = len(_sends([shop]))
    _, stderr = await asyncio.wait_for(run.communicate(), timeout=90)
    assert run.returncode == 1, stderr.decode()
    report = json.loads((tmp_path / "a" / "o" / "run.json").read_text())
    failed = [e for e in report["errors"] if e["error"] == "budget_unavailable"]
    assert failed and "budget 'vendor': its store redis://127.0.0.1:" in failed[0]["detail"]
    assert "cannot be reached" in failed[0]["detail"]
    pages = report["ledger"]["shop"]["pages"]
    assert pages["failed"] == len(failed) and pages["unaccounted"] == 0
    sends = _sends([shop])
    assert max_per_window(sends) <= 5
    assert len(sends) - died <= 5  # after the store died: at most those it had granted already
    assert 5 <= died < 30


async def test_leases_from_two_books_never_overfill_a_window(redis):
    """Four senders through two books (as two processes would), 10 sends
    per 0.1 s: the grants Redis recorded, on its own clock, never hold an
    11th in any window."""
    books = [RedisBook(redis.url, "tight", 10, 0.1, 0.005) for _ in range(2)]
    grants: set[tuple[bytes, float]] = set()  # (its number, when): each read by its sender right after

    async def sender(book: RedisBook, n: int) -> None:
        limiter = LeaseLimiter(book.lease, book.hold_for, 10, 0.1, 0.005, "tight")
        for _ in range(n):
            await limiter.acquire()  # the store keeps a grant for a span: its sender sees it next
            grants.update(await book.client.zrange(book.keys[0], 0, -1, withscores=True))

    try:
        await asyncio.gather(*(sender(books[i % 2], 25) for i in range(4)))
    finally:
        for book in books:
            await book.close()
    times = sorted(score for _, score in grants)
    assert len(times) == 100
    assert max_per_window(times, window=0.1) <= 10


@pytest.mark.parametrize(("budget", "said"), [
    ({"rate": "5/s", "store": "redis://127.0.0.1:6379/0"}, "a budget kept in a store is named"),
    ({"name": "v", "rate": "5/s", "store": "http://127.0.0.1:6379"}, "store: expected redis://HOST[:PORT][/DB]"),
])  # fmt: skip
def test_a_store_is_checked_where_it_is_written(budget, said):
    graph = yaml.safe_dump({"version": 1, "nodes": {"shop": {"pipe": [
        {"paginate": {"url": "http://127.0.0.1:1/products", "style": "skip_limit"}}, {"rate_limit": budget},
        "fetch", {"parse": {"schema": "dummyjson"}}, {"normalize": {"preset": "dummyjson"}},
        {"jsonl": {"path": "p.jsonl"}}]}}}, sort_keys=False)  # fmt: skip
    with pytest.raises(SpecError) as caught:
        parse_spec(graph, default_registry(), env={})
    assert re.match(r"graph\.yaml:\d+:\d+: .*" + re.escape(said), str(caught.value)), str(caught.value)


def test_a_budget_kept_in_a_store_keeps_no_sources_together():
    """Its sources may run in different shards: every send asks the store."""
    from stages.http.rate_limit import RateLimitParams, _shares

    assert _shares(RateLimitParams(name="v", store="redis://127.0.0.1:6379/0")) == []
    assert _shares(RateLimitParams(name="v")) == ["limiter:v"]
