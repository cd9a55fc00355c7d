"""`fetch`: GET each planned page with timeouts, retries and a circuit breaker.

A per-item stage: up to `concurrency` pages in flight. Every attempt takes a
slot from the node's `rate_limit` (if any); the breaker is per endpoint.
A page that fails for good becomes an error record (endpoint, error, page,
attempts, url, timestamp) on the run report and nothing goes downstream.
"""

from __future__ import annotations

import random
from typing import Annotated, Any

import msgspec

from flow.breaker import CircuitBreaker
from flow.fetcher import Fetched, Fetcher, Timeouts
from flow.paging import PageRequest, PageResponse
from flow.registry import ConcurrentParams, Params, stage
from mocks._spec import parse_duration

Duration = str | float | int


class RetryParams(Params):
    retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 3
    backoff: Duration = "0.5s"
    max: Duration = "8s"
    retry_after_cap: Duration = "60s"


class BreakerParams(Params):
    failures: Annotated[int, msgspec.Meta(ge=1)] = 5
    failure_rate: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    window: Annotated[int, msgspec.Meta(ge=1)] = 20
    cooldown: Duration = "10s"
    probes: Annotated[int, msgspec.Meta(ge=1)] = 1
    half_open_timeout: Duration = "30s"


class FetchParams(ConcurrentParams):
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    ordered: bool = False
    timeout: Duration = "10s"
    connect_timeout: Duration = "3s"
    read_timeout: Duration = "5s"
    max_bytes: Annotated[int, msgspec.Meta(ge=1)] = 16 * 1024 * 1024
    retry: RetryParams = RetryParams()
    breaker: BreakerParams = BreakerParams()

    def __post_init__(self) -> None:
        for name in ("timeout", "connect_timeout", "read_timeout"):
            try:
                parse_duration(getattr(self, name))
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None


class _Unlimited:
    async def acquire(self) -> float:
        return 0.0

    def hold_until(self, when: float) -> None:
        pass


def _fetcher(params: FetchParams, ctx: Any) -> Fetcher:
    from flow.retry import RetryPolicy

    r, b = params.retry, params.breaker

    def transition(t: Any) -> None:
        ctx.record_event("breaker", endpoint=ctx.node, old=t.old, new=t.new, reason=t.reason)
        ctx.count(f"breaker_{t.new}")

    def event(name: str, attrs: dict[str, Any]) -> None:
        ctx.count(name)  # retries, breaker waits, connection errors

    breaker = CircuitBreaker(
        failures=b.failures,
        failure_rate=b.failure_rate,
        window=b.window,
        cooldown=parse_duration(b.cooldown),
        probes=b.probes,
        half_open_timeout=parse_duration(b.half_open_timeout),
        name=ctx.node,
        on_transition=transition,
    )
    policy = RetryPolicy(
        r.retries, parse_duration(r.backoff), parse_duration(r.max), parse_duration(r.retry_after_cap)
    )
    timeouts = Timeouts(
        parse_duration(params.timeout),
        parse_duration(params.connect_timeout),
        parse_duration(params.read_timeout),
    )
    return Fetcher(
        ctx.resources.session(),
        ctx.shared.get("limiter") or _Unlimited(),
        breaker,
        policy,
        timeouts,
        params.max_bytes,
        deadline=ctx.resources.deadline_at,
        rng=random.Random(),
        concurrency=params.concurrency,
        on_event=event,
        tracer=ctx.resources.telemetry.tracer if ctx.tracing else None,  # off: no per-attempt span work
        telemetry=ctx.resources.telemetry,
    )


@stage("fetch", FetchParams, consumes="requests", produces="pages", per_item=True)
async def fetch(request: PageRequest, params: FetchParams, ctx: Any) -> PageResponse | None:
    """GET one page: rate-limited attempts, retries with backoff, a breaker per endpoint."""
    fetcher = ctx.shared.get("fetcher")
    if fetcher is None:
        fetcher = ctx.shared["fetcher"] = _fetcher(params, ctx)
    result = await fetcher.fetch(request.url, params=request.params, headers=request.headers)
    pager = ctx.shared.get("pager")
    if isinstance(result, Fetched):
        headers = dict(result.headers)
        if pager is not None:
            pager.observe(request, result.body, headers)
        ctx.count("pages")
        return PageResponse(request, result.status, result.body, headers, result.attempts)
    if pager is not None:
        pager.observe(request, None, None)
    ctx.record_error(
        result.error,
        result.detail,
        endpoint=request.endpoint,
        page=request.page,
        attempts=result.attempts,
        status=result.status,
        url=request.url,
    )
    return None


KIND = fetch
