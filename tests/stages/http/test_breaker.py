"""The circuit breaker's state machine, driven directly with explicit times."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from stages.http.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


def test_opens_at_the_threshold_and_refuses_until_the_cooldown():
    #  t:   0  1  2  3  4 | 4..13.99: refused | 14: one probe
    #      F  F  F  F  F  | open              | half-open
    breaker = CircuitBreaker(failures=5, cooldown=10)
    for t in range(4):
        breaker.allow(t).failure(t)
        assert breaker.state == CLOSED
    breaker.allow(4).failure(4)
    assert breaker.state == OPEN
    assert all(breaker.allow(4 + k * 0.5) is None for k in range(20))  # 4.0 .. 13.5
    probe = breaker.allow(14)
    assert probe is not None and probe.probe and breaker.state == HALF_OPEN
    assert breaker.allow(14.1) is None  # one probe at a time
    probe.success(14.5)
    assert breaker.state == CLOSED
    assert [(t.old, t.new) for t in breaker.transitions] == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
    ]


def test_a_success_resets_the_consecutive_count():
    breaker = CircuitBreaker(failures=3)
    for ok in [False, False, True, False, False, True]:
        permit = breaker.allow(0)
        permit.success(0) if ok else permit.failure(0)
    assert breaker.state == CLOSED


def test_failure_rate_over_a_window_opens():
    breaker = CircuitBreaker(failures=100, failure_rate=0.5, window=10)
    for i in range(10):
        permit = breaker.allow(i)
        permit.failure(i) if i % 2 else permit.success(i)
    assert breaker.state == OPEN
    assert "failure rate 50%" in breaker.transitions[-1].reason


def test_a_failed_probe_reopens_for_a_new_cooldown():
    breaker = CircuitBreaker(failures=1, cooldown=5)
    breaker.allow(0).failure(0)
    breaker.allow(5).failure(6)
    assert breaker.state == OPEN and breaker.retry_at() == 11
    assert breaker.allow(10.9) is None and breaker.allow(11) is not None


def test_failed_probes_are_counted_in_a_row_until_it_closes():
    """The count the fetcher gives up on a dead endpoint by: half-open
    periods that ended open again (a failed or hung probe)."""
    breaker = CircuitBreaker(failures=1, cooldown=1, half_open_timeout=2)
    breaker.allow(0).failure(0)
    assert breaker.failed_probes == 0  # opened by requests, not by a probe
    breaker.allow(1).failure(1)
    breaker.allow(2)  # a probe that hangs
    assert breaker.allow(4.5) is None and breaker.failed_probes == 2
    breaker.allow(5.5).success(5.5)
    assert breaker.state == "closed" and breaker.failed_probes == 0


def test_cancelled_or_neutral_probes_give_their_place_back():
    breaker = CircuitBreaker(failures=1, cooldown=1, probes=2)
    breaker.allow(0).failure(0)
    first, second = breaker.allow(1), breaker.allow(1)
    assert first and second and breaker.allow(1) is None
    first.neutral(1.1)  # e.g. cancelled, or a 404: the endpoint answered
    third = breaker.allow(1.2)
    assert third is not None and breaker.state == HALF_OPEN
    second.neutral(1.3)
    third.success(1.4)
    assert breaker.state == CLOSED


def test_a_hung_probe_cannot_pin_half_open():
    breaker = CircuitBreaker(failures=1, cooldown=1, half_open_timeout=3)
    breaker.allow(0).failure(0)
    hung = breaker.allow(1)
    assert hung is not None
    assert breaker.allow(3.9) is None  # half-open, its one probe still out
    assert breaker.allow(4.1) is None and breaker.state == OPEN  # bound passed: reopened
    hung.success(9)  # the late answer changes nothing
    assert breaker.state == OPEN
    assert breaker.allow(5.1) is not None  # a fresh probe after the new cooldown


def test_a_late_answer_from_an_old_probe_does_not_free_a_new_probes_place():
    breaker = CircuitBreaker(failures=1, cooldown=1, half_open_timeout=2, probes=1)
    breaker.allow(0).failure(0)
    hung = breaker.allow(1)  # half-open period 1
    assert breaker.allow(3.5) is None and breaker.state == OPEN  # reopened at 3.5
    fresh = breaker.allow(4.5)  # half-open period 2, its one probe
    assert fresh is not None
    hung.neutral(4.6)
    hung_again = breaker.allow(4.7)
    assert hung_again is None  # still one probe at a time
    fresh.success(5)
    assert breaker.state == CLOSED


def test_neutral_outcomes_do_not_count_as_failures():
    breaker = CircuitBreaker(failures=2)
    for _ in range(10):
        breaker.allow(0).neutral(0)
    assert breaker.state == CLOSED


def test_an_outcome_is_taken_once():
    breaker = CircuitBreaker(failures=2)
    permit = breaker.allow(0)
    permit.failure(0)
    permit.failure(0)
    assert breaker.state == CLOSED


class BreakerMachine(RuleBasedStateMachine):
    """Random interleavings of requests, outcomes and time; the invariants
    hold throughout."""

    def __init__(self) -> None:
        super().__init__()
        self.breaker = CircuitBreaker(failures=3, failure_rate=0.6, window=5, cooldown=2, probes=2,
                                      half_open_timeout=4)  # fmt: skip
        self.now = 0.0
        self.permits: list = []

    @rule(dt=st.floats(0, 3))
    def wait(self, dt: float) -> None:
        self.now += dt

    @rule()
    def request(self) -> None:
        state_before, since = self.breaker.state, self.breaker._since
        permit = self.breaker.allow(self.now)
        if state_before == OPEN and self.now < since + self.breaker.cooldown:
            assert permit is None  # nothing gets through an open breaker
        if permit is not None:
            self.permits.append(permit)

    @precondition(lambda self: self.permits)
    @rule(data=st.data(), outcome=st.sampled_from(["success", "failure", "neutral"]))
    def finish(self, data: st.DataObject, outcome: str) -> None:
        permit = self.permits.pop(data.draw(st.integers(0, len(self.permits) - 1)))
        getattr(permit, outcome)(self.now)

    @invariant()
    def probes_are_bounded_and_counted_exactly(self) -> None:
        assert 0 <= self.breaker._probes <= self.breaker.max_probes
        if self.breaker.state == HALF_OPEN:
            current = [p for p in self.permits if p.probe and p._epoch == self.breaker._epoch]
            assert len(current) == self.breaker._probes


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)


@given(failures=st.integers(1, 10))
def test_exactly_threshold_consecutive_failures_open(failures):
    breaker = CircuitBreaker(failures=failures)
    for i in range(failures - 1):
        breaker.allow(i).failure(i)
    assert breaker.state == CLOSED
    breaker.allow(failures).failure(failures)
    assert breaker.state == OPEN
