"""Ctrl-C (SIGINT) and SIGTERM around `flow run`'s event loop.

While the graph runs, the run's own loop handlers stop it (flow/cli/run.py).
Before they are in place (imports, reading the graph, starting the mocks)
and after they are gone (writing run.json), `PRESSES` holds the signals: the
first press is only counted, so a run pressed during start-up starts stopped,
drains at once and writes its report, and one pressed at the end still
writes it; a second press raises KeyboardInterrupt, which `main` turns into
exit 130 without a traceback, as a second Ctrl-C cancels a run at once."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Presses:
    def __init__(self) -> None:
        self.count = 0
        self.holding = False

    @contextlib.contextmanager
    def held(self) -> Iterator[Presses]:
        """Hold the signals until the block ends (main thread only: elsewhere
        signals are not this process's to handle), then restore the handlers."""
        self.count = 0
        previous: dict[signal.Signals, Any] = {}
        with contextlib.suppress(ValueError):  # not the main thread
            for sig in SIGNALS:
                previous[sig] = signal.signal(sig, self._pressed)
        self.holding = bool(previous)
        try:
            yield self
        finally:
            self.holding = False
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def hold_again(self) -> None:
        """Hold the signals again after an event loop's handlers replaced
        ours (removing them restores Python's defaults, not what was there)."""
        if self.holding:
            for sig in SIGNALS:
                signal.signal(sig, self._pressed)

    def _pressed(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count > 1:
            raise KeyboardInterrupt


PRESSES = Presses()


def stopper(runtime: Any) -> Callable[[], None]:
    """A run's handler: a press stops it (what is in flight drains), a second cancels at once."""

    def stop() -> None:
        PRESSES.count += 1
        runtime.stop("interrupted")
        if PRESSES.count > 1:
            runtime.cancel_all()

    return stop


@contextlib.contextmanager
def on_signals(handler: Callable[[], None]) -> Iterator[None]:
    """`handler` on SIGINT and SIGTERM, on the running loop, while the block runs."""
    import asyncio

    loop = asyncio.get_running_loop()
    for sig in SIGNALS:
        loop.add_signal_handler(sig, handler)
    try:
        yield
    finally:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)
        PRESSES.hold_again()  # held again, as before the block (else a SIGTERM would end the process)
