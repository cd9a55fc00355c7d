"""The client limiter, on virtual time: whatever the callers do (bursts,
concurrency, cancellations, jittery latency under the margin, delays between
a slot and the write), the server's sliding 1-second window never holds
more than `rate` arrivals; with steady demand the limiter uses at least 90%
of the rate; a stop ends the wait for a slot."""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flow.testing import run_virtual
from mocks import SlidingWindowLimit, max_per_window, windows_over_limit
from stages.http.limiter import Limiters, SlidingWindowLimiter, Stopped


def test_reserve_spaces_the_sixth_request():
    #  t: 0    0    0    0    0  | 1.05 (the 6th waits a window + margin)
    limiter = SlidingWindowLimiter(5, 1.0, margin=0.05)
    assert [limiter.reserve(0.0) for _ in range(6)] == [0.0] * 5 + [1.05]
    assert limiter.reserve(0.5) == 1.05  # first come, first served
    assert limiter.reserve(3.0) == 3.0


def test_hold_until_delays_everyone():
    limiter = SlidingWindowLimiter(5)
    limiter.hold_until(7.5)
    assert limiter.reserve(1.0) == 7.5
    assert limiter.reserve(8.0) == 8.0


@settings(max_examples=150, deadline=None)
@given(
    rate=st.integers(1, 6),
    workers=st.integers(1, 6),
    plans=st.lists(st.lists(st.floats(0, 1.5), min_size=1, max_size=12), min_size=1, max_size=6),
    cancel_every=st.integers(0, 5),
    seed=st.integers(0, 2**16),
)
def test_no_server_window_ever_holds_more_than_rate(rate, workers, plans, cancel_every, seed):
    margin = 0.05
    limiter = SlidingWindowLimiter(rate, 1.0, margin=margin)
    jitter = random.Random(seed)
    arrivals: list[float] = []

    async def worker(plan: list[float], k: int) -> None:
        for i, think in enumerate(plan):
            await asyncio.sleep(think)
            if cancel_every and (i + k) % cancel_every == 0:
                # A caller that gives up while waiting (e.g. the deadline);
                # if its slot came before the cancel, it sends right then.
                attempt = asyncio.ensure_future(acquire_and_send())
                await asyncio.sleep(0.01)
                attempt.cancel()
                await asyncio.gather(attempt, return_exceptions=True)
            else:
                await acquire_and_send()

    async def acquire_and_send() -> None:
        await limiter.acquire()
        # The server sees the request after a latency that varies by < margin.
        now = asyncio.get_running_loop().time()
        arrivals.append(now + 0.02 + jitter.uniform(0, margin * 0.99))

    async def main() -> None:
        await asyncio.gather(*(worker(plans[k % len(plans)], k) for k in range(workers)))

    run_virtual(main())
    assert max_per_window(arrivals, 1.0) <= rate
    server = SlidingWindowLimit(rate, 1.0)
    assert all(server.admit(t) for t in sorted(arrivals))  # the mock server would answer no 429


STEP = st.tuples(
    st.floats(0, 1.5),  # think time before the request
    st.floats(0, 2.0),  # from the slot to the write: a connection opening, a stall
    st.sampled_from(["send", "send", "send", "plan", "hold", "give_up", "give_up_at_write"]),
)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.integers(1, 6),
    window=st.sampled_from([0.5, 1.0, 2.0]),
    margin=st.sampled_from([0.0, 0.05, 0.3]),
    senders=st.lists(st.lists(STEP, min_size=1, max_size=10), min_size=1, max_size=6),
)
def test_actual_send_times_never_put_more_than_rate_in_a_window(rate, window, margin, senders):
    """Concurrent callers take slots and reach the write a random while
    after them (virtual time between take() and the check at the write);
    some only plan a slot and never send, set a hold (a Retry-After), or give
    up while waiting for a slot or for room at the write. Judged on the times
    the check let requests go, the actual send times: no window of `window`
    ever holds more than `rate` (even with no margin), and every request
    that did not give up was sent."""
    limiter = SlidingWindowLimiter(rate, window, margin=margin)
    sends: list[float] = []

    async def send(delay: float, give_up: float | None) -> None:
        slot, _ = await limiter.take()
        await asyncio.sleep(delay)
        with contextlib.suppress(TimeoutError):  # gave up while it waited for room: nothing sent
            sends.append(await asyncio.wait_for(limiter.on_wire(slot), give_up))

    async def sender(steps: list[tuple[float, float, str]]) -> None:
        loop = asyncio.get_running_loop()
        for think, delay, kind in steps:
            await asyncio.sleep(think)
            if kind == "plan":  # a slot whose request fails before its write
                limiter.reserve(loop.time())
            elif kind == "hold":
                limiter.hold_until(loop.time() + delay)
            elif kind == "give_up":  # a slot taken (or not) within 10 ms, then never used
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(limiter.take(), 0.01)
            else:
                await send(delay, None if kind == "send" else 0.01)

    async def main() -> None:
        await asyncio.gather(*(sender(steps) for steps in senders))

    run_virtual(main())
    assert windows_over_limit(sends, rate, window) == []
    assert len(sends) >= sum(kind == "send" for steps in senders for _, _, kind in steps)


def test_a_stop_ends_the_wait_for_a_slot_and_gives_the_slot_back():
    limiter = SlidingWindowLimiter(1, 1.0, margin=0.0)

    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        await limiter.acquire(stop)  # t=0
        loop.call_later(0.25, stop.set)
        with pytest.raises(Stopped):
            await limiter.take(stop)  # due at 1.0
        stopped_at = loop.time()
        slot, _ = await limiter.take()  # the 1.0 slot was given back: the next caller gets it
        return stopped_at, slot

    assert run_virtual(main()) == (0.25, 1.0)


@pytest.mark.parametrize("rate,workers", [(5, 1), (5, 8), (2, 3), (10, 20)])
def test_steady_demand_uses_at_least_90_percent_of_the_rate(rate, workers):
    limiter = SlidingWindowLimiter(rate, 1.0, margin=0.05)
    requests = 50 * rate
    sends: list[float] = []

    async def worker() -> None:
        loop = asyncio.get_running_loop()
        while len(sends) < requests:
            await limiter.acquire()
            sends.append(loop.time())

    async def main() -> float:
        started = asyncio.get_running_loop().time()
        await asyncio.gather(*(worker() for _ in range(workers)))
        return asyncio.get_running_loop().time() - started

    elapsed = run_virtual(main())
    achieved = (len(sends) - rate) / elapsed  # the first `rate` go at t=0
    assert achieved >= 0.9 * rate
    assert max_per_window(sends, 1.0) <= rate


def test_a_cancelled_waiter_gives_its_slot_back():
    limiter = SlidingWindowLimiter(1, 1.0, margin=0.0)

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        await limiter.acquire()  # t=0
        waiting = asyncio.ensure_future(limiter.acquire())  # would go at t=1
        await asyncio.sleep(0.1)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        await limiter.acquire()  # takes the returned slot: t=1, not t=2
        return [loop.time()]

    assert run_virtual(main()) == [1.0]


def test_shared_limiters_by_name():
    limiters = Limiters()
    a = limiters.get("shop", 5, 1.0)
    assert limiters.get("shop", 5, 1.0) is a
    assert limiters.get("other", 5, 1.0) is not a
    with pytest.raises(ValueError, match="a shared limiter has one rate"):
        limiters.get("shop", 10, 1.0)


def test_a_stalled_loop_does_not_bunch_the_waiters_due_during_the_stall():
    """The event loop stalls for 1 s (a blocking call) while 30 senders
    wait: the ones due during the stall must not all go at once when it
    ends. Judged on the send times, against the 1 s window of a server."""
    import asyncio

    from flow.testing import run_virtual
    from mocks import windows_over_limit

    async def main() -> tuple[list[float], int]:
        loop = asyncio.get_running_loop()
        limiter = SlidingWindowLimiter(5, 1.0, margin=0.05)
        sent: list[float] = []

        async def sender() -> None:
            await limiter.acquire()
            sent.append(loop.time())

        loop.call_at(loop.time() + 1.5, loop.advance, 1.0)  # the clock jumps past the 2.1 s slots: a stall
        await asyncio.gather(*(sender() for _ in range(30)))
        return sent, getattr(limiter, "stalls", 0)

    sent, stalls = run_virtual(main())
    assert len(sent) == 30 and windows_over_limit(sent, 5, 1.0) == []
    assert stalls > 0  # the stall did catch waiters out


def test_timer_jitter_with_no_margin_still_sends(monkeypatch):
    """Timers fire a millisecond late (as real ones do) and the margin is 0:
    jitter is not a stall, and every sender gets through (the margin is what
    absorbs jitter at the server; 0 opts out of it)."""
    import asyncio

    from flow.testing import run_virtual
    from stages.http import limiter as module

    sleep = asyncio.sleep

    async def late(delay: float) -> None:
        await sleep(delay + 0.001)

    monkeypatch.setattr(module.asyncio, "sleep", late)

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        limiter = SlidingWindowLimiter(2, 0.2, margin=0.0)
        sent: list[float] = []

        async def sender() -> None:
            await limiter.acquire()
            sent.append(loop.time())

        await asyncio.wait_for(asyncio.gather(*(sender() for _ in range(12))), 60)
        return sent

    sent = run_virtual(main())
    assert len(sent) == 12 and sent[-1] < 2.0  # 12 sends at 2 per 0.2 s: about 1 s, not for ever
