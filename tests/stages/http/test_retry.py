"""Retry policy: which outcomes are retried, and the waits between attempts."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stages.http.retry import RetryPolicy, parse_retry_after, retryable_status


@pytest.mark.parametrize(
    "status,retry",
    [
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (599, True),
        (400, False),
        (401, False),
        (404, False),
        (422, False),
    ],
)
def test_retryable_statuses(status, retry):
    assert retryable_status(status) is retry


@given(retry=st.integers(1, 12), seed=st.integers(0, 2**32), base=st.floats(0.01, 2), cap=st.floats(0.1, 30))
def test_backoff_is_full_jitter_under_an_exponential_cap(retry, seed, base, cap):
    policy = RetryPolicy(base=base, cap=cap)
    delay = policy.backoff(retry, random.Random(seed))
    assert 0 <= delay <= min(cap, base * 2 ** (retry - 1))


def test_backoff_grows_then_stops_at_the_cap():
    policy = RetryPolicy(base=0.5, cap=8)
    rng = random.Random(1)
    ceilings = [max(policy.backoff(r, rng) for _ in range(2000)) for r in range(1, 7)]
    # Full jitter: the largest of many draws approaches each ceiling 0.5, 1, 2, 4, 8, 8.
    for got, ceiling in zip(ceilings, [0.5, 1, 2, 4, 8, 8], strict=True):
        assert 0.97 * ceiling <= got <= ceiling


@given(retry_after=st.floats(0, 500), seed=st.integers(0, 2**16))
def test_retry_after_is_honoured_and_capped(retry_after, seed):
    policy = RetryPolicy(retry_after_cap=60)
    wait = policy.wait(1, random.Random(seed), retry_after)
    assert wait >= min(retry_after, 60)
    assert wait <= max(min(retry_after, 60), policy.base)


def test_parse_retry_after_seconds_dates_and_garbage():
    now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    epoch = now.timestamp()
    assert parse_retry_after("3", epoch) == 3.0
    assert parse_retry_after(" 120 ", epoch) == 120.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=7), usegmt=True), epoch) == 7.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=7), usegmt=True), epoch) == 0.0
    assert parse_retry_after(None, epoch) is None
    assert parse_retry_after("soon", epoch) is None
    assert parse_retry_after("-1", epoch) is None


def test_attempts_are_retries_plus_one():
    assert RetryPolicy().attempts == 4
