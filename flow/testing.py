"""Testing helpers that ship with flow: an event loop on virtual time.

`run_virtual(coro)` runs a coroutine on a loop whose clock only moves when
every task is waiting for a timer: then it jumps straight to the next timer.
A test of a 30 s backoff or a minute of rate-limited requests takes
microseconds, and timings are exact and repeatable. Real loopback sockets
work too: before jumping to the next timer the loop gives pending I/O 2 ms of
real time, so in-process servers (the mocks, with `LoopClock`) and clients
share one virtual clock. Waiting on I/O with no timer pending polls in 2 ms
real steps.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _VirtualSelector(selectors.DefaultSelector):
    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        # The loop asks to block for `timeout` (until its next timer). First
        # give real I/O in flight (loopback: microseconds) a brief real chance,
        # so a response is not pushed past a timer; then, with nothing ready,
        # move the clock to that timer instead of waiting for it.
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if len(self.get_map()) > 1:  # sockets besides the loop's own wake-up pipe
            ready = super().select(0.002)
            if ready:
                return ready
        if timeout is not None:
            self._loop.advance(timeout)
        return super().select(0)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        super().__init__(selector=_VirtualSelector(self))

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


def run_virtual(coro: Coroutine[Any, Any, T], *, start: float = 0.0) -> T:
    """Run `coro` to completion on a fresh VirtualTimeLoop."""
    loop = VirtualTimeLoop(start)
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
