"""Retries: what is worth another attempt, and how long to wait before it.

- Retried: connection errors, timeouts, 429 and 5xx. Never retried: other
  4xx, and bodies that do not decode (the same request would get the same
  answer).
- Waits: exponential backoff with full jitter, `uniform(0, min(cap,
  base * 2**n))` before retry n+1 (AWS's "full jitter": spreads clients that
  failed together), but never less than the server's `Retry-After` (seconds
  or an HTTP-date), which is itself capped at `retry_after_cap`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES or 500 <= status <= 599


def parse_retry_after(value: str | None, now_epoch: float) -> float | None:
    """Seconds to wait from a Retry-After header, or None when absent or
    unreadable. `now_epoch`: the current wall-clock time (for HTTP-dates)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now_epoch)


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 3  # attempts = retries + 1
    base: float = 0.5
    cap: float = 8.0
    retry_after_cap: float = 60.0

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def backoff(self, retry: int, rng: random.Random) -> float:
        """The jittered wait before retry number `retry` (1-based)."""
        ceiling = min(self.cap, self.base * 2 ** (retry - 1))
        return rng.uniform(0.0, ceiling)

    def wait(self, retry: int, rng: random.Random, retry_after: float | None = None) -> float:
        """The wait before retry `retry`: backoff, but at least the server's
        (capped) Retry-After."""
        delay = self.backoff(retry, rng)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_cap))
        return delay
