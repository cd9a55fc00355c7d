"""The server's sliding-window rate limit, counted the way strict APIs count.

Data structure: a deque of the arrival times of every request in the last
`window` seconds, oldest first. A request arriving at `t` is refused (429)
when the deque already holds `limit` arrivals in `(t - window, t]`, i.e. when
it would be the (limit+1)-th request of some sliding window. Refused requests
are appended too: a client that keeps hammering stays locked out, and "no
sliding window holds a 6th request" is the same statement as "no 429".

The server runs on one event loop and `admit` never awaits, so check and
append are atomic with respect to concurrent handlers; no lock is needed.
"""

from __future__ import annotations

import math
from collections import deque


class SlidingWindowLimit:
    def __init__(self, limit: int, window: float = 1.0) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a limit needs limit >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self._arrivals: deque[float] = deque()

    def __repr__(self) -> str:
        return (
            f"SlidingWindowLimit({self.limit}/{self.window:g}s, "
            f"in_window={len(self._arrivals)}, refused_total={self.refused})"
        )

    refused = 0

    def _trim(self, now: float) -> None:
        arrivals, horizon = self._arrivals, now - self.window
        while arrivals and arrivals[0] <= horizon:
            arrivals.popleft()

    def admit(self, now: float) -> bool:
        """Record an arrival at `now`; True when it stays within the limit."""
        self._trim(now)
        admitted = len(self._arrivals) < self.limit
        self._arrivals.append(now)
        if not admitted:
            self.refused += 1
        return admitted

    def retry_after(self, now: float) -> float:
        """Seconds until a request would be admitted, if none arrives meanwhile."""
        self._trim(now)
        excess = len(self._arrivals) - self.limit
        if excess < 0:
            return 0.0
        # +1 ns: `now + wait` must land past the window edge despite float rounding.
        return max(0.0, self._arrivals[excess] + self.window - now + 1e-9)

    def remaining(self, now: float) -> int:
        self._trim(now)
        return max(0, self.limit - len(self._arrivals))

    def reset(self) -> None:
        self._arrivals.clear()
        self.refused = 0


def retry_after_header(seconds: float) -> str:
    """Retry-After is whole seconds (RFC 9110); round up so waiting it suffices."""
    return str(max(1, math.ceil(seconds - 1e-9)))
