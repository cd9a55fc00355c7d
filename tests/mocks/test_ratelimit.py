"""The server's sliding-window limit: 429 exactly when a request would be the
(limit+1)-th in some sliding window, never otherwise. Virtual time throughout."""

from __future__ import annotations

import bisect
import itertools

from hypothesis import given
from hypothesis import strategies as st

from mocks import ManualClock, SlidingWindowLimit, max_per_window, windows_over_limit

# Arrival times on a 1 ms grid, so that exact window edges (t and t + 1.0) occur.
arrivals = st.lists(st.integers(0, 5000), min_size=1, max_size=120).map(
    lambda ms: [m / 1000 for m in sorted(ms)]
)


def oracle(times: list[float], limit: int, window: float) -> list[bool]:
    """Brute force: admitted iff fewer than `limit` earlier arrivals in (t - window, t]."""
    return [sum(1 for s in times[:i] if t - window < s <= t) < limit for i, t in enumerate(times)]


@given(times=arrivals, limit=st.integers(1, 7), window=st.sampled_from([0.5, 1.0, 2.0]))
def test_admits_exactly_as_the_oracle(times, limit, window):
    limiter = SlidingWindowLimit(limit, window)
    assert [limiter.admit(t) for t in times] == oracle(times, limit, window)


@given(times=arrivals, limit=st.integers(1, 7))
def test_retry_after_is_exact(times, limit):
    """Waiting `retry_after` (and no less) gets the next request admitted."""
    limiter = SlidingWindowLimit(limit, 1.0)
    for t in times:
        limiter.admit(t)
    now = times[-1]
    wait = limiter.retry_after(now)
    probe = SlidingWindowLimit(limit, 1.0)
    for t in times:
        probe.admit(t)
    assert probe.admit(now + wait)
    if wait > 0.001:
        early = SlidingWindowLimit(limit, 1.0)
        for t in times:
            early.admit(t)
        assert not early.admit(now + wait - 0.001)


def test_refused_requests_count_so_hammering_stays_locked_out():
    #  t:  0.0 0.1 0.2 0.3 0.4 | 0.5 ... every 0.1 s, for 3 s
    #      ok  ok  ok  ok  ok  | 429 from here on: each window holds 10 arrivals
    limiter = SlidingWindowLimit(5, 1.0)
    results = [limiter.admit(i / 10) for i in range(30)]
    assert results == [True] * 5 + [False] * 25
    assert limiter.refused == 25


def test_evenly_spaced_requests_at_the_limit_are_all_admitted():
    # 0.2 s apart exactly is a knife edge under float rounding; a tenth of a
    # millisecond more is what a careful client would add anyway.
    limiter = SlidingWindowLimit(5, 1.0)
    assert all(limiter.admit(i * 0.2001) for i in range(100))


@given(times=arrivals, limit=st.integers(1, 7))
def test_evidence_helpers_agree_with_the_limiter(times, limit):
    limiter = SlidingWindowLimit(limit, 1.0)
    admitted = [t for t in times if limiter.admit(t)]
    # A client that only sends what the server admitted never breaks the limit...
    assert max_per_window(admitted, 1.0) <= limit
    # ...and every refused arrival is one that pushes its window over the limit.
    over = {t for t, _ in windows_over_limit(times, limit, 1.0)}
    refused = limiter.refused
    assert refused == sum(1 for i, t in enumerate(times) if i - bisect.bisect_right(times, t - 1.0) >= limit)
    assert refused == 0 or over


def test_max_per_window_edges():
    assert max_per_window([]) == 0
    assert max_per_window([0.0, 1.0]) == 1  # exactly one window apart: never together
    assert max_per_window([0.0, 0.999]) == 2
    assert max_per_window(list(itertools.repeat(3.0, 4))) == 4


async def test_server_answers_429_exactly_on_the_sixth_in_a_second(http, start_mock):
    clock = ManualClock(start=0.0)
    server = await start_mock(style="dummyjson", products=50, rate_limit="5/s", clock=clock)
    # Virtual arrival times in seconds after start. The first six fall in one
    # second, so the sixth gets 429; refused arrivals count too, so 1.05..1.51
    # meet windows that still hold 0.1..0.5 and the 429 at 0.5.
    schedule = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 1.05, 1.12, 1.25, 1.39, 1.45, 1.51, 2.6]
    statuses, retry_afters = [], []
    for t in schedule:
        clock.t = t
        async with http.get(server.api_url) as response:
            statuses.append(response.status)
            retry_afters.append(response.headers.get("Retry-After"))
    limiter = SlidingWindowLimit(5, 1.0)
    assert statuses == [200 if limiter.admit(t) else 429 for t in schedule]
    assert statuses[:6] == [200, 200, 200, 200, 200, 429]
    assert 429 in statuses[6:]
    assert all(r is not None and int(r) >= 1 for s, r in zip(statuses, retry_afters, strict=True) if s == 429)
    log = server.stats()["requests"]
    assert [round(r["t"], 6) for r in log] == schedule
    assert [r["status"] for r in log] == statuses
    assert all(r["fault"] == "rate_limited" for r in log if r["status"] == 429)


async def test_retry_after_header_rounds_up(http, start_mock):
    clock = ManualClock()
    server = await start_mock(style="platzi", products=10, rate_limit="2/3s", clock=clock)
    for _ in range(2):
        async with http.get(server.api_url) as response:
            assert response.status == 200
    clock.advance(0.4)
    async with http.get(server.api_url) as response:
        assert response.status == 429
        # The oldest arrival leaves the 3 s window 2.6 s from now: wait 3 whole seconds.
        assert response.headers["Retry-After"] == "3"
        assert response.headers["RateLimit-Limit"] == "2"


async def test_rate_limit_off_never_refuses(http, start_mock):
    server = await start_mock(style="cursor", products=10, rate_limit="off", clock=ManualClock())
    for _ in range(30):
        async with http.get(server.api_url) as response:
            assert response.status == 200
