"""The fetcher against live mock servers on virtual time, judged by the
servers' own request logs: rate compliance under faults, at most 4 attempts
per page, Retry-After honoured, 4xx tried once, nothing sent while the
breaker is open, recovery after an outage, timeouts."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest

from flow.testing import run_virtual
from mocks import LoopClock, MockServer, ServerSpec, windows_over_limit
from stages.http.breaker import OPEN, CircuitBreaker
from stages.http.fetcher import Fetched, Fetcher, FetchFailed, Timeouts
from stages.http.limiter import SlidingWindowLimiter
from stages.http.retry import RetryPolicy
from stages.http.session import make_session
from tests import loopback


async def fetch_pages(server: MockServer, fetcher_args: dict[str, Any], pages: int, workers: int = 8,
                      page_size: int = 20) -> tuple[list[Any], Fetcher]:  # fmt: skip
    async with make_session() as session:
        fetcher = Fetcher(session, rng=random.Random(7), **fetcher_args)
        queue = list(range(pages))
        results: list[Any] = [None] * pages

        async def worker() -> None:
            while queue:
                page = queue.pop(0)
                params = {"limit": str(page_size), "skip": str(page * page_size)}
                results[page] = await fetcher.fetch(server.api_url, params=params)

        await asyncio.gather(*(worker() for _ in range(workers)))
        return results, fetcher


def limiter(rate: int = 5) -> SlidingWindowLimiter:
    return SlidingWindowLimiter(rate, 1.0, margin=0.05)


def test_rate_compliance_and_attempt_bound_under_faults():
    spec = ServerSpec(style="dummyjson", products=1200, error_rate=0.3, latency="10ms..400ms", seed=3)

    async def main() -> tuple[list[Any], dict[str, Any]]:
        async with MockServer(spec, clock=LoopClock()) as server:
            breaker = CircuitBreaker(failures=50)  # this test is about retries, not the breaker
            results, _ = await fetch_pages(server, {"limiter": limiter(), "breaker": breaker}, pages=60)
            return results, server.stats()

    results, stats = run_virtual(main(), start=100.0)
    times = [r["t"] for r in stats["requests"]]
    assert windows_over_limit(times, 5, 1.0) == []  # zero sliding 1 s windows over the limit
    assert stats["counts"]["by_status"].get("429", 0) == 0
    attempts = Counter(r["query"]["skip"] for r in stats["requests"])
    assert max(attempts.values()) <= 4
    assert sum(attempts.values()) > 60  # retries did happen (30% errors)
    fetched = [r for r in results if isinstance(r, Fetched)]
    failed = [r for r in results if isinstance(r, FetchFailed)]
    assert len(fetched) + len(failed) == 60  # every planned page is fetched or failed
    assert all(f.error.endswith("_after_retries") and f.attempts == 4 for f in failed)
    assert sum(r.attempts for r in fetched + failed) == len(times)  # the client counts what the server saw


def test_retry_after_is_honoured():
    # The client's limiter is too fast for the server on purpose (8/s vs 2/s).
    spec = ServerSpec(style="platzi", products=400, rate_limit="2/s")

    async def main() -> dict[str, Any]:
        async with MockServer(spec, clock=LoopClock()) as server:
            args = {"limiter": limiter(8), "breaker": CircuitBreaker(), "policy": RetryPolicy(retries=6)}
            async with make_session() as session:
                fetcher = Fetcher(session, rng=random.Random(1), **args)
                for page in range(6):
                    result = await fetcher.fetch(
                        server.api_url, params={"offset": str(page * 20), "limit": "20"}
                    )
                    assert isinstance(result, Fetched)
            return server.stats()

    stats = run_virtual(main())
    requests = stats["requests"]
    refused = [i for i, r in enumerate(requests) if r["status"] == 429]
    assert refused  # the test provoked 429s
    for i in refused:
        # Retry-After was a whole number of seconds >= the wait the server computed.
        assert requests[i + 1]["t"] - requests[i]["t"] >= 1.0 - 1e-6


def test_a_404_is_tried_once():
    async def main() -> tuple[Any, dict[str, Any]]:
        async with MockServer(ServerSpec(), clock=LoopClock()) as server, make_session() as session:
            fetcher = Fetcher(session, CircuitBreaker(), limiter=limiter())
            result = await fetcher.fetch(server.url + "/nope")
            return result, server.stats()

    result, stats = run_virtual(main())
    assert isinstance(result, FetchFailed) and (result.error, result.attempts) == ("http_404", 1)
    assert stats["counts"]["requests"] == 1


def test_breaker_sends_nothing_while_open_and_recovers_after_the_outage():
    spec = ServerSpec(style="dummyjson", products=600, outages=["0s..6s"])

    async def main() -> tuple[list[Any], dict[str, Any], CircuitBreaker, float]:
        async with MockServer(spec, clock=LoopClock()) as server:
            breaker = CircuitBreaker(failures=3, cooldown=2.0)
            results, _ = await fetch_pages(
                server, {"limiter": limiter(), "breaker": breaker, "policy": RetryPolicy(retries=3)}, pages=30
            )
            return results, server.stats(), breaker, server._started

    results, stats, breaker, started = run_virtual(main(), start=50.0)
    assert any(t.new == OPEN for t in breaker.transitions)
    # Open periods, in server time: from each opening to the next transition.
    spans = []
    for i, t in enumerate(breaker.transitions):
        if t.new == OPEN:
            end = breaker.transitions[i + 1].at if i + 1 < len(breaker.transitions) else float("inf")
            spans.append((t.at - started, end - started))
    during_open = [r for r in stats["requests"] if any(a + 1e-6 < r["t"] < b - 1e-6 for a, b in spans)]
    assert during_open == []  # zero requests reach the endpoint while the breaker is open
    assert all(isinstance(r, Fetched) for r in results)  # drained to completion after the outage
    assert breaker.state == "closed"


def test_a_hang_becomes_timeout_after_retries():
    spec = ServerSpec(style="dummyjson", products=40, hang_rate=1.0, hang="30s")

    async def main() -> Any:
        async with MockServer(spec, clock=LoopClock()) as server, make_session() as session:
            fetcher = Fetcher(session, CircuitBreaker(failures=10), limiter=limiter(),
                              timeouts=Timeouts(total=1.0, connect=1.0, read=1.0))  # fmt: skip
            result = await fetcher.fetch(server.api_url)
            await asyncio.wait_for(server.idle(), 5)
            return result, server.stats()

    result, stats = run_virtual(main())
    assert isinstance(result, FetchFailed)
    assert (result.error, result.attempts) == ("timeout_after_retries", 4)
    assert [r["status"] for r in stats["requests"]] == [499] * 4  # each hung request was given up


async def _scripted(answers: list[tuple[int, dict[str, str]]]) -> tuple[Any, list[float], str]:
    """A loopback server answering each request with the next scripted
    (status, headers), then 200; it logs arrival times (loop time)."""
    from aiohttp import web

    arrivals: list[float] = []

    async def handle(request: web.Request) -> web.Response:
        arrivals.append(asyncio.get_running_loop().time())
        status, headers = answers.pop(0) if answers else (200, {})
        return web.Response(status=status, headers=headers, body=b"[]", content_type="application/json")

    runner, base = await loopback.start("/p", handle)
    return runner, arrivals, f"{base}/p"


def test_retry_after_on_a_503_is_honoured_and_failures_say_why():
    async def main() -> tuple[Any, Any, list[float], list[float]]:
        runner, arrivals, url = await _scripted([(503, {"Retry-After": "2"})])
        other_runner, other_arrivals, other_url = await _scripted([(503, {})] * 10)
        try:
            async with make_session() as session:
                fetcher = Fetcher(session, CircuitBreaker(failures=50), limiter=limiter(),
                                  policy=RetryPolicy(retries=2, base=0.01, cap=0.02))  # fmt: skip
                ok = await fetcher.fetch(url)
                failed = await fetcher.fetch(other_url)
        finally:
            await runner.cleanup()
            await other_runner.cleanup()
        return ok, failed, arrivals, other_arrivals

    ok, failed, arrivals, other_arrivals = run_virtual(main())
    assert isinstance(ok, Fetched) and ok.attempts == 2
    assert arrivals[1] - arrivals[0] >= 2.0  # "come back in 2 s", measured at the server
    assert isinstance(failed, FetchFailed) and len(other_arrivals) == 3
    assert (failed.error, failed.detail) == ("http_503_after_retries", "3 attempts, the last: HTTP 503")


def test_a_body_that_is_not_json_is_retried_until_one_is():
    """An HTML page with status 200 (a proxy in the way), then a cut-off
    body: both are failures of the attempt, retried; the third answer is
    good. Without the check the first answer would be the page's."""

    async def main() -> tuple[Any, Any, list[float]]:
        from aiohttp import web

        bodies = [b"<html><body>Bad gateway</body></html>", b'[{"id": 1}, {"id"', b'[{"id": 1}]']
        arrivals: list[float] = []

        async def handle(request: web.Request) -> web.Response:
            arrivals.append(asyncio.get_running_loop().time())
            return web.Response(body=bodies.pop(0) if bodies else b"<html/>", content_type="application/json")

        runner, base = await loopback.start("/p", handle)
        url = f"{base}/p"
        try:
            async with make_session() as session:
                fetcher = Fetcher(session, CircuitBreaker(failures=50), limiter=limiter(), check_json=True,
                                  policy=RetryPolicy(retries=3, base=0.01, cap=0.02))  # fmt: skip
                good = await fetcher.fetch(url)
                bad = await fetcher.fetch(url)  # HTML every time now
        finally:
            await runner.cleanup()
        return good, bad, arrivals

    good, bad, arrivals = run_virtual(main())
    assert isinstance(good, Fetched) and (good.attempts, good.body) == (3, b'[{"id": 1}]')
    assert isinstance(bad, FetchFailed) and bad.error == "html_instead_of_json_after_retries"
    assert bad.detail.startswith("4 attempts, the last: a 7-byte body that is not JSON")
    assert len(arrivals) == 3 + 4  # every attempt reached the server once


def test_a_stopped_run_sends_no_retry_and_waits_out_no_backoff_or_breaker():
    """Stopped (Ctrl-C) while one page waits out a 30 s Retry-After and another
    an open breaker: both fail at once as `stopped`, and the servers see
    nothing more (their logs), so the drain ends long before the grace."""

    async def main() -> tuple[Any, Any, float, list[float], list[float]]:
        loop = asyncio.get_running_loop()
        backoff_runner, backoff_log, backoff_url = await _scripted([(503, {"Retry-After": "30"})] * 5)
        broken_runner, broken_log, broken_url = await _scripted([(503, {})] * 5)
        stop = asyncio.Event()
        try:
            async with make_session() as session:
                slow = Fetcher(session, CircuitBreaker(failures=50), limiter=limiter(), stop=stop,
                               policy=RetryPolicy(retries=3, base=0.01, cap=0.01))  # fmt: skip
                broken = Fetcher(session, CircuitBreaker(failures=1, cooldown=60.0), limiter=limiter(),
                                 stop=stop, policy=RetryPolicy(retries=3, base=0.01, cap=0.01))  # fmt: skip
                started = loop.time()
                loop.call_later(5.0, stop.set)
                results = await asyncio.gather(slow.fetch(backoff_url), broken.fetch(broken_url))
                return *results, loop.time() - started, backoff_log, broken_log
        finally:
            await backoff_runner.cleanup()
            await broken_runner.cleanup()

    waited, held, seconds, backoff_log, broken_log = run_virtual(main())
    assert isinstance(waited, FetchFailed) and isinstance(held, FetchFailed)
    assert (waited.error, waited.attempts, held.error, held.attempts) == ("stopped", 1, "stopped", 1)
    assert waited.detail == "the run was stopped before the next attempt"
    assert (len(backoff_log), len(broken_log)) == (1, 1)  # nothing sent after the stop
    assert 5.0 <= seconds < 5.1  # at the stop, not after the 30 s Retry-After or the 60 s cooldown


def _record_writes(monkeypatch: Any) -> list[float]:
    """When each GET is written to its socket (the transport's write), in loop
    time: what a server's window counts, give or take the latency."""
    import asyncio.selector_events

    writes: list[float] = []
    transport = asyncio.selector_events._SelectorSocketTransport
    write = transport.write

    def recording_write(self: Any, data: Any) -> None:
        if bytes(data[:4]) == b"GET ":
            writes.append(asyncio.get_running_loop().time())
        write(self, data)

    monkeypatch.setattr(transport, "write", recording_write)
    return writes


async def _closing(request: Any) -> Any:
    """An answer that closes its connection: every request opens a new one."""
    from aiohttp import web

    return web.Response(body=b"[]", content_type="application/json", headers={"Connection": "close"})


async def _forty_closing_fetches(concurrency: int) -> tuple[list[Any], float, SlidingWindowLimiter]:
    """40 fetches, `concurrency` in flight, through one 5/s limiter, of a
    loopback path whose every answer closes its connection: (results, loop
    seconds they took, the limiter)."""
    loop = asyncio.get_running_loop()
    runner, base = await loopback.start("/p", _closing)
    shared = limiter()
    try:
        async with make_session() as session:
            fetcher = Fetcher(session, CircuitBreaker(failures=50), limiter=shared, concurrency=concurrency,
                              policy=RetryPolicy(retries=0))  # fmt: skip
            started = loop.time()
            results = await asyncio.gather(*(fetcher.fetch(f"{base}/p") for _ in range(40)))
            return results, loop.time() - started, shared
    finally:
        await runner.cleanup()


def test_a_stall_while_a_connection_opens_does_not_send_late_into_later_windows(monkeypatch):
    """The event loop stalls (0.2-0.6 s, seeded) while some requests open
    their connections, after their limiter slots: sent on the stale slots,
    they would land in the windows of the sends due after them. Judged on
    when each request is written to its socket (the transport's write),
    not on the slots: no 1 s window + margin holds more than 5."""
    writes = _record_writes(monkeypatch)

    async def main() -> tuple[list[Any], int]:
        loop = asyncio.get_running_loop()
        rng, connect = random.Random(3), loop.sock_connect

        async def stalling_connect(sock: Any, address: Any) -> None:
            if rng.random() < 0.3:
                loop.advance(rng.uniform(0.2, 0.6))  # type: ignore[attr-defined]  # blocked meanwhile
            await connect(sock, address)

        monkeypatch.setattr(loop, "sock_connect", stalling_connect)
        results, _, shared = await _forty_closing_fetches(concurrency=8)
        return results, shared.stalls

    results, stalls = run_virtual(main())
    assert all(isinstance(r, Fetched) for r in results) and len(writes) == 40  # each sent once
    assert windows_over_limit(writes, 5, 1.0) == []
    assert stalls > 0  # the stalls did catch sends out


@pytest.mark.parametrize("concurrency,set_ups", [(8, 1), (4, 2)])
def test_slow_connections_cost_their_set_up_once_not_once_a_window(monkeypatch, concurrency, set_ups):
    """Every answer closes its connection and every connection takes 300 ms
    to open (a remote API over TLS; the loop is not blocked meanwhile): each
    send trails its slot by 0.3 s. That is no stall: 40 requests at 5/s go
    in the time of 40 on instant connections plus the set-up. The floor:
    5 sends per span (1 s + 0.05 s margin), 8 spans' worth, the last batch
    starting 7 spans in, 7.35 s; every send 0.3 s later, 7.65 s; allowed:
    the margin on top, 7.7 s. With fewer requests in flight (4, the default)
    than the rate, a window's 5th request starts only once one of the 4 has
    been answered, a set-up later: one more set-up, 8 s. (The check that
    re-queued sends late by more than half the margin took 15.75 s and
    10.8 s here, re-queueing every one.) No 1 s window of the writes holds
    more than 5, and no send waited at the write: there was room for each."""
    writes = _record_writes(monkeypatch)
    connect_time, span = 0.3, 1.05
    floor = (40 // 5 - 1) * span

    async def main() -> tuple[list[Any], float, SlidingWindowLimiter]:
        loop = asyncio.get_running_loop()
        connect = loop.sock_connect

        async def slow_connect(sock: Any, address: Any) -> None:
            await asyncio.sleep(connect_time)  # the handshake's round trips: a wait, not a stall
            await connect(sock, address)

        monkeypatch.setattr(loop, "sock_connect", slow_connect)
        return await _forty_closing_fetches(concurrency)

    results, elapsed, shared = run_virtual(main())
    assert all(isinstance(r, Fetched) for r in results) and len(writes) == 40  # each sent once
    assert windows_over_limit(writes, 5, 1.0) == []
    assert floor + set_ups * connect_time - 1e-6 <= elapsed <= floor + set_ups * connect_time + 0.05
    assert (shared.stalls, shared.acquired) == (0, 40)  # no send re-queued, no slot taken twice


def test_a_stopped_run_does_not_send_a_request_waiting_for_its_slot():
    """A 429 with `Retry-After: 30` holds the limiter for 30 s; a second
    page waits for its slot behind the hold; the run stops at 1 s. The
    waiting page fails as `stopped` at the stop, and the server's log shows
    the first request only: nothing went out 30 s later."""

    async def main() -> tuple[Any, Any, float, list[float]]:
        loop = asyncio.get_running_loop()
        runner, log, url = await _scripted([(429, {"Retry-After": "30"})])
        stop = asyncio.Event()
        try:
            async with make_session() as session:
                fetcher = Fetcher(session, CircuitBreaker(), limiter=limiter(), stop=stop)
                first = asyncio.ensure_future(fetcher.fetch(url))
                await asyncio.sleep(0.5)  # the 429 is in: the limiter holds until 30 s
                loop.call_later(0.5, stop.set)
                second = await fetcher.fetch(url)
                stopped_after = loop.time()
                return await first, second, stopped_after, log
        finally:
            await runner.cleanup()

    first, second, stopped_after, log = run_virtual(main())
    assert isinstance(second, FetchFailed) and (second.error, second.attempts) == ("stopped", 0)
    assert second.detail == "the run was stopped while the request waited for a send slot"
    assert 1.0 <= stopped_after < 1.01  # at the stop, not at the end of the hold
    assert isinstance(first, FetchFailed) and (first.error, first.attempts) == ("stopped", 1)
    assert len(log) == 1 and log[0] < 0.5  # the 429'd request only: nothing sent after the stop


def test_a_stop_while_a_request_waits_for_room_at_the_write_sends_nothing(monkeypatch):
    """2 per 1 s: of four requests, the first takes 1.2 s to open its
    connection; the others go at 0, 1.05 and 1.05, so at its write (1.2 s)
    the window is full until 2.1 s. The run stops at 1.5 s while it waits
    for room: it fails as `stopped`, unwritten."""
    writes = _record_writes(monkeypatch)

    async def main() -> tuple[list[Any], SlidingWindowLimiter]:
        loop = asyncio.get_running_loop()
        connect, stalled = loop.sock_connect, []

        async def slow_once(sock: Any, address: Any) -> None:
            if not stalled:
                stalled.append(loop.time())
                await asyncio.sleep(1.2)  # the first connection takes 1.2 s; the others are instant
            await connect(sock, address)

        monkeypatch.setattr(loop, "sock_connect", slow_once)
        runner, base = await loopback.start("/p", _closing)
        shared, stop = SlidingWindowLimiter(2, 1.0, margin=0.05), asyncio.Event()
        try:
            async with make_session() as session:
                fetcher = Fetcher(session, CircuitBreaker(), limiter=shared, stop=stop, concurrency=8)
                loop.call_later(1.5, stop.set)
                results = await asyncio.gather(*(fetcher.fetch(f"{base}/p") for _ in range(4)))
        finally:
            await runner.cleanup()
        return results, shared

    results, shared = run_virtual(main())
    late = [r for r in results if isinstance(r, FetchFailed)]
    assert [(r.error, r.attempts) for r in late] == [("stopped", 0)] and shared.stalls == 1
    assert writes == [0.0, 1.05, 1.05]


def test_a_compressed_body_is_held_to_the_cap_as_it_inflates():
    import gzip

    from aiohttp import web

    body = b"[" + b"0," * 600_000 + b"0]"  # 1.2 MB of JSON, a few kB compressed

    async def handle(request: web.Request) -> web.Response:
        packed = gzip.compress(body)
        headers = {"Content-Encoding": "gzip", "Content-Length": str(len(packed))}
        return web.Response(body=packed, headers=headers, content_type="application/json")

    async def main(cap: int) -> Any:
        runner, base = await loopback.start("/p", handle)
        try:
            async with make_session() as session:
                fetcher = Fetcher(session, CircuitBreaker(), limiter=limiter(), max_bytes=cap)
                return await fetcher.fetch(f"{base}/p")
        finally:
            await runner.cleanup()

    small = run_virtual(main(100_000))
    assert isinstance(small, FetchFailed) and small.error == "body_too_large"
    whole = run_virtual(main(2_000_000))
    assert isinstance(whole, Fetched) and whole.body == body


def test_limited_requests_go_through_the_hook_and_the_others_skip_it(monkeypatch):
    """Sessions: a request with a limiter is held to it as it goes on the
    wire (the hooked session); one without goes through the plain session,
    over the same connection pool, and never reaches the hook."""
    from aiohttp import web

    from stages.http import session as session_module
    from stages.http.session import Sessions

    hooked: list[Any] = []
    on_wire = session_module._on_wire

    async def counting(session: Any, context: Any, params: Any) -> None:
        hooked.append(context.trace_request_ctx.limiter)
        await on_wire(session, context, params)

    monkeypatch.setattr(session_module, "_on_wire", counting)  # before the sessions are made
    peers: list[Any] = []

    async def handle(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return web.json_response([])

    async def main() -> tuple[list[Any], SlidingWindowLimiter, bool]:
        runner, base = await loopback.start("/p", handle)
        sessions, shared = Sessions(), limiter(50)
        try:
            fetcher = Fetcher(sessions.limited, CircuitBreaker(), plain_session=sessions.plain, concurrency=1)
            outcomes = [await fetcher.fetch(f"{base}/p", limiter=shared) for _ in range(3)]
            outcomes += [await fetcher.fetch(f"{base}/p") for _ in range(3)]  # no limiter
            assert all(isinstance(o, Fetched) for o in outcomes)
            # One cookie jar; neither session resends a request behind the fetcher's back.
            assert sessions.plain.cookie_jar is sessions.limited.cookie_jar
            assert sessions.plain._retry_connection is False and sessions.limited._retry_connection is False
            return hooked, shared, sessions.limited.connector is sessions.plain.connector
        finally:
            await sessions.close()
            await runner.cleanup()

    calls, shared, one_pool = run_virtual(main())
    assert calls == [shared] * 3 and one_pool
    assert len(peers) == 6 and len(set(peers)) == 1  # one kept-alive connection for both sessions


def test_the_unlimited_limiter_holds_nothing():
    from stages.http.session import UNLIMITED

    async def main() -> tuple[Any, float]:
        UNLIMITED.hold_until(1e9)  # a 429's Retry-After: nothing to hold
        return await UNLIMITED.take(), await UNLIMITED.on_wire(3.5)

    assert run_virtual(main()) == ((0.0, 0.0), 3.5)
