"""Every fault kind occurs at its configured rate, deterministically under the
seed, and looks to a client the way it would from a real server."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from typing import Any

import aiohttp
import msgspec
import pytest

from mocks import ManualClock

N = 400  # requests per measurement: distinct pages, first attempts


def tolerance(rate: float, n: int = N) -> float:
    """4.5 standard deviations of a binomial count: a fair draw fails ~1 in 150,000."""
    return 4.5 * math.sqrt(n * rate * (1 - rate)) + 1


async def observe(http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> str:
    """What a client sees, classified without looking at the server's log."""
    try:
        async with http.get(url, headers=headers) as response:
            body = await response.read()
            if response.status >= 500:
                return "error"
            if response.status != 200:
                return f"http_{response.status}"
            if response.content_type == "text/html":
                return "html"
            try:
                msgspec.json.decode(body)
            except msgspec.DecodeError as err:
                return "truncated" if "truncated" in str(err) else "invalid_json"
            return "ok"
    except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
        return "reset"


async def run_pages(http: aiohttp.ClientSession, server: Any, n: int = N) -> list[str]:
    return [await observe(http, f"{server.api_url}?limit=5&skip={5 * i}") for i in range(n)]


CLIENT_VIEW = {
    "error": "error",
    "truncate": "truncated",
    "invalid_json": "invalid_json",
    "html": "html",
    "reset": "reset",
    "hang": "ok",
}


@pytest.mark.parametrize("kind", list(CLIENT_VIEW))
async def test_each_fault_occurs_at_its_rate(http, start_mock, kind):
    rate = 0.25
    clock = ManualClock()
    server = await start_mock(
        style="dummyjson", products=5 * N, seed=11, clock=clock, **{f"{kind}_rate": rate}
    )
    seen = Counter(await run_pages(http, server))
    logged = server.stats()["counts"]["by_fault"].get(kind, 0)
    assert abs(logged - N * rate) <= tolerance(rate), (logged, seen)
    if kind == "hang":
        # Virtual time: each hang "waited" the configured 30 s, instantly.
        assert clock.slept.count(30.0) == logged
        assert seen == {"ok": N}
    else:
        assert seen[CLIENT_VIEW[kind]] == logged
        assert seen["ok"] == N - logged


async def test_faults_together_each_at_its_rate_and_exclusive(http, start_mock):
    rates = {"error": 0.1, "truncate": 0.05, "invalid_json": 0.05, "html": 0.05, "reset": 0.05, "hang": 0.05}
    server = await start_mock(
        style="dummyjson",
        products=5 * N,
        clock=ManualClock(),
        **{f"{kind}_rate": rate for kind, rate in rates.items()},
    )
    seen = Counter(await run_pages(http, server))
    by_fault = server.stats()["counts"]["by_fault"]
    for kind, rate in rates.items():
        assert abs(by_fault.get(kind, 0) - N * rate) <= tolerance(rate), (kind, by_fault)
    assert seen["ok"] == N - sum(by_fault.get(k, 0) for k in rates if k != "hang")
    statuses = Counter(r["status"] for r in server.stats()["requests"] if r["fault"] == "error")
    assert set(statuses) <= {500, 502, 503} and len(statuses) == 3


async def test_same_seed_same_faults_other_seed_other_faults(http, start_mock):
    async def sequence(seed: int) -> list[str]:
        server = await start_mock(
            style="dummyjson", products=5 * 200, seed=seed, error_rate=0.3, clock=ManualClock()
        )
        return await run_pages(http, server, 200)

    first, again, other = await sequence(3), await sequence(3), await sequence(4)
    assert first == again
    assert first != other


async def test_a_retry_gets_a_fresh_draw(http, start_mock):
    """The same page asked again is not doomed: attempt n has its own draw."""
    server = await start_mock(style="platzi", products=40, error_rate=0.5, seed=5, clock=ManualClock())
    outcomes = Counter([await observe(http, f"{server.api_url}?offset=0&limit=20") for _ in range(200)])
    assert abs(outcomes["error"] - 100) <= tolerance(0.5, 200)


async def test_outage_window_fails_everything_then_recovers(http, start_mock):
    clock = ManualClock(start=0.0)
    server = await start_mock(style="reqres", products=40, outages=["2s..4s"], clock=clock)
    key = {"x-api-key": "reqres-free-v1"}
    timeline = []
    for t in (0.0, 1.99, 2.0, 3.0, 3.99, 4.0, 9.0):
        clock.t = t
        async with http.get(server.api_url, headers=key) as response:
            timeline.append(response.status)
    assert timeline == [200, 200, 503, 503, 503, 200, 200]


async def test_latency_range_is_drawn_within_bounds(http, start_mock):
    clock = ManualClock()
    server = await start_mock(style="cursor", products=400, latency="50ms..400ms", clock=clock)
    await run_pages(http, server, 100)
    assert len(clock.slept) == 100
    assert all(0.05 <= s <= 0.4 for s in clock.slept)
    assert max(clock.slept) - min(clock.slept) > 0.25  # spread over the range, not a constant
    assert [r["latency"] for r in server.stats()["requests"]] == clock.slept


async def test_fixed_latency(http, start_mock):
    clock = ManualClock()
    server = await start_mock(style="jsonserver", products=100, latency="120ms", clock=clock)
    await run_pages(http, server, 10)
    assert clock.slept == [0.12] * 10


async def test_a_hang_outlasts_the_client_timeout_and_is_cancelled(start_mock):
    """Real time, bounded: the server holds the answer for 30 s, the client
    gives up after 0.2 s, and the server's handler is cancelled (logged 499)."""
    server = await start_mock(style="dummyjson", products=20, hang_rate=1.0, hang="30s")
    timeout = aiohttp.ClientTimeout(total=0.2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        with pytest.raises(asyncio.TimeoutError):
            async with session.get(server.api_url) as response:
                await response.read()

    await asyncio.wait_for(server.idle(), timeout=5)
    assert server.stats()["requests"][0]["status"] == 499
    assert server.stats()["requests"][0]["fault"] == "hang"
    assert server.stats()["truth"]["served"]["records"] == 0


async def test_faulty_pages_are_not_counted_as_served(http, start_mock):
    server = await start_mock(
        style="dummyjson", products=5 * N, truncate_rate=0.3, html_rate=0.2, clock=ManualClock()
    )
    seen = await run_pages(http, server)
    served = server.stats()["truth"]["served"]
    assert served["records"] == 5 * seen.count("ok")
