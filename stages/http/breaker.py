"""A circuit breaker per endpoint: a small state machine on an injected clock.

    closed --(failure threshold)--> open --(cooldown)--> half-open
       ^                                                   |  |
       +----------------(a probe succeeds)-----------------+  |
    open <--(a probe fails, or half-open outlives its bound)--+

- closed: every request is allowed; failures are counted, consecutive and as
  a rate over the last `window` outcomes. Either threshold opens the breaker.
- open: nothing is allowed until `cooldown` has passed since opening.
- half-open: at most `probes` requests at once are allowed through as
  probes. A probe's success closes the breaker, its failure reopens it. A
  cancelled probe gives its place back. If half-open lasts longer than
  `half_open_timeout` (a probe hung), the breaker reopens.

`failed_probes` counts the half-open periods in a row that ended open again
(a probe failed or hung) since the breaker last closed: how long the
endpoint has stayed down, in probes.

Outcomes: `success`, `failure`, and `neutral` for what says nothing about the
endpoint's health (cancellation, 4xx, undecodable bodies): neutral outcomes
are not counted, and a neutral probe just gives its place back.

Every transition is appended to `transitions` and passed to `on_transition`
(for logs, counters and span events). Methods are synchronous and take `now`,
so tests drive the machine directly; one event loop calls them, no locks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class Transition:
    at: float
    old: str
    new: str
    reason: str


class Permit:
    """Leave to send one request; report its outcome exactly once."""

    __slots__ = ("_breaker", "_done", "_epoch", "probe")

    def __init__(self, breaker: CircuitBreaker, probe: bool) -> None:
        self._breaker, self.probe, self._done = breaker, probe, False
        self._epoch = breaker._epoch  # which half-open period a probe belongs to

    def _finish(self) -> bool:
        if self._done:
            return False
        self._done = True
        return True

    def success(self, now: float) -> None:
        if self._finish():
            self._breaker._outcome(self, True, now)

    def failure(self, now: float) -> None:
        if self._finish():
            self._breaker._outcome(self, False, now)

    def neutral(self, now: float) -> None:
        """Cancelled, 4xx, undecodable: says nothing about the endpoint's health."""
        if self._finish() and self.probe and self._epoch == self._breaker._epoch:
            self._breaker._probes -= 1


class CircuitBreaker:
    def __init__(
        self,
        *,
        failures: int = 5,
        failure_rate: float | None = None,
        window: int = 20,
        cooldown: float = 10.0,
        probes: int = 1,
        half_open_timeout: float = 30.0,
        name: str = "",
        on_transition: Callable[[Transition], None] | None = None,
    ) -> None:
        if failures < 1 or probes < 1 or cooldown < 0 or window < 1:
            raise ValueError("a breaker needs failures >= 1, probes >= 1, cooldown >= 0, window >= 1")
        self.failures, self.failure_rate, self.window = failures, failure_rate, window
        self.cooldown, self.max_probes, self.half_open_timeout = cooldown, probes, half_open_timeout
        self.name, self.on_transition = name, on_transition
        self.state = CLOSED
        self._consecutive = 0
        self._outcomes: deque[bool] = deque(maxlen=window)  # True = failure
        self._since = 0.0  # when the current state began
        self._probes = 0  # probes in flight in the current half-open period
        self._epoch = 0  # counts half-open periods; a probe from an old one is stale
        self.failed_probes = 0  # half-open periods in a row that reopened, since it last closed
        self.transitions: list[Transition] = []

    def __repr__(self) -> str:
        return (
            f"<CircuitBreaker {self.name or '-'} {self.state} consecutive={self._consecutive} "
            f"probes={self._probes}/{self.max_probes} since={self._since:.3f}>"
        )

    def _move(self, new: str, now: float, reason: str) -> None:
        transition = Transition(now, self.state, new, reason)
        if new == CLOSED:
            self.failed_probes = 0
        elif self.state == HALF_OPEN and new == OPEN:
            self.failed_probes += 1
        self.state, self._since = new, now
        self.transitions.append(transition)
        if self.on_transition is not None:
            self.on_transition(transition)

    def retry_at(self) -> float | None:
        """When an open breaker will let a probe through (None unless open)."""
        return self._since + self.cooldown if self.state == OPEN else None

    def allow(self, now: float) -> Permit | None:
        """A permit to send now, or None (the breaker refuses)."""
        if self.state == OPEN:
            if now < self._since + self.cooldown:
                return None
            self._move(HALF_OPEN, now, "cooldown over")
            self._probes = 0
            self._epoch += 1
        if self.state == HALF_OPEN:
            if now - self._since > self.half_open_timeout:
                self._move(OPEN, now, "half-open outlived its bound (a probe hung)")
                return None
            if self._probes >= self.max_probes:
                return None
            self._probes += 1
            return Permit(self, probe=True)
        return Permit(self, probe=False)

    def _outcome(self, permit: Permit, ok: bool, now: float) -> None:
        if permit.probe:
            if permit._epoch != self._epoch or self.state != HALF_OPEN:
                return  # a late probe from an earlier half-open period: decided already
            self._probes -= 1
            if ok:
                self._consecutive = 0
                self._outcomes.clear()
                self._move(CLOSED, now, "probe succeeded")
            else:
                self._move(OPEN, now, "probe failed")
            return
        if self.state != CLOSED:
            return  # a request sent before the breaker opened
        self._outcomes.append(not ok)
        self._consecutive = 0 if ok else self._consecutive + 1
        if self._consecutive >= self.failures:
            self._move(OPEN, now, f"{self._consecutive} consecutive failures")
        elif self.failure_rate is not None and len(self._outcomes) == self.window:
            rate = sum(self._outcomes) / self.window
            if rate >= self.failure_rate:
                self._move(OPEN, now, f"failure rate {rate:.0%} over the last {self.window}")
