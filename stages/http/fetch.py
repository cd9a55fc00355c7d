"""`fetch`: GET each planned page with timeouts, retries and a circuit breaker.

A per-item stage: up to `concurrency` pages in flight per endpoint. Every
attempt takes a slot of the limiter its request carries (assigned by a
`rate_limit` stage upstream, in this node or another); the breaker is per
endpoint. Each outcome goes back to the request's planner. A page that fails
for good becomes an error record (endpoint, error, page, attempts, url) on
`NODE.errors` and nothing goes downstream.

Each page fetched is kept in the run's journal (status, headers, body)
before it goes on; a resumed run (`flow run --resume`) takes the pages the
run before it kept instead of requesting them: no request, no slot of the
rate limit, counted as fetched and as `from_state` on the ledger.
"""

from __future__ import annotations

import base64
import contextlib
import random
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlencode

import msgspec

from flow import ledger
from flow.registry import ConcurrentParams, Params, stage
from flow.units import Duration

from .paging import PageRequest, PageResponse
from .planning import plan_fetch
from .urls import safe_url

if TYPE_CHECKING:  # imported when the first page is fetched: `flow validate` needs no aiohttp
    from .fetcher import Fetcher
    from .outcomes import Fetched, FetchFailed

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}  # flow.breaker.state values


class RetryParams(Params):
    retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 3
    backoff: Duration = Duration.default(0.5)
    max: Duration = Duration.default(8)
    retry_after_cap: Duration = Duration.default(60)


class BreakerParams(Params):
    failures: Annotated[int, msgspec.Meta(ge=1)] = 5
    failure_rate: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    window: Annotated[int, msgspec.Meta(ge=1)] = 20
    cooldown: Duration = Duration.default(10)
    probes: Annotated[int, msgspec.Meta(ge=1)] = 1
    half_open_timeout: Duration = Duration.default(30)


class FetchParams(ConcurrentParams):
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4  # requests in flight per endpoint
    ordered: bool = False  # pass pages on in request order (else as they arrive)
    timeout: Duration = Duration.default(10)  # one attempt, from connect to the last byte
    connect_timeout: Duration = Duration.default(3)  # to open a connection
    read_timeout: Duration = Duration.default(5)  # between two reads of the answer
    max_bytes: Annotated[int, msgspec.Meta(ge=1)] = 16 * 1024 * 1024  # a bigger body fails the page
    expect_json: bool = True  # a 2xx body that is not JSON (HTML, cut short) is a failure, retried
    retry: RetryParams = msgspec.field(default_factory=RetryParams)  # retries, backoff, max, retry_after_cap
    breaker: BreakerParams = msgspec.field(default_factory=BreakerParams)  # failures, cooldown, probes, ...

    def __post_init__(self) -> None:
        for name in ("timeout", "connect_timeout", "read_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be longer than 0s (without a timeout a request can hang)")


def _close_sessions(sessions: Any) -> Any:
    return sessions.close()


def fetcher_for(endpoint: str, params: FetchParams, ctx: Any) -> Fetcher:
    """A Fetcher for `endpoint` with `params`' timeouts, retries and breaker;
    its events counted on `endpoint` (also used by the jobs family's `vendor`)."""
    from .breaker import CircuitBreaker
    from .fetcher import Fetcher, Timeouts
    from .retry import RetryPolicy
    from .session import Sessions

    r, b = params.retry, params.breaker

    def transition(t: Any) -> None:
        ctx.record_event("breaker", endpoint=endpoint, old=t.old, new=t.new, reason=t.reason)
        ctx.count(f"breaker_{t.new}", on=endpoint)
        ctx.gauge("flow.breaker.state", BREAKER_STATES.get(t.new, -1), **{"flow.endpoint": endpoint})

    def event(name: str, attrs: dict[str, Any]) -> None:
        ctx.count(name, on=endpoint)  # retries, breaker waits, connection errors
        ctx.tick(name, endpoint)
        ctx.add_event(name, **attrs)

    breaker = CircuitBreaker(
        failures=b.failures,
        failure_rate=b.failure_rate,
        window=b.window,
        cooldown=b.cooldown,
        probes=b.probes,
        half_open_timeout=b.half_open_timeout,
        name=endpoint,
        on_transition=transition,
    )
    ctx.gauge("flow.breaker.state", 0, **{"flow.endpoint": endpoint})
    sessions = ctx.resource("http.sessions", Sessions, _close_sessions)
    return Fetcher(
        sessions.limited,
        breaker,
        RetryPolicy(r.retries, r.backoff, r.max, r.retry_after_cap),
        Timeouts(params.timeout, params.connect_timeout, params.read_timeout),
        params.max_bytes,
        deadline=ctx.deadline_at,
        stop=ctx.stopping,
        rng=random.Random(),
        concurrency=params.concurrency,
        on_event=event,
        telemetry=ctx,
        check_json=params.expect_json,
        plain_session=sessions.plain,
    )


@stage("fetch", FetchParams, consumes=PageRequest, produces=PageResponse, per_item=True, plan=plan_fetch)
async def fetch(request: PageRequest, params: FetchParams, ctx: Any) -> PageResponse | None:
    """GET one page: rate-limited attempts, retries with backoff, a breaker per endpoint."""
    from .outcomes import Fetched

    pager = request.pager
    key = _page_key(request) if ctx.keeping and not request.probe else ""
    kept = ctx.recall(key) if key else None  # a resumed run: the page as the run before it fetched it
    taping = ctx.taping
    if kept is not None:
        result = _recalled(request, kept)
        ctx.count(ledger.FROM_STATE, on=request.endpoint)
    elif taping == "play":  # flow test: the recorded exchange, never the network
        result = _played(request, ctx)
    else:
        result = await _fetched(request, params, ctx)
    if taping == "record":  # a recalled page too: a resumed run records the whole walk
        ctx.tape(_tape_key(request), _exchange(request, result))
    if request.probe:  # paginate's style: auto probe: told to its planner, passed on to nobody
        if isinstance(result, Fetched):
            pager.observe(request, result.body, dict(result.headers))
        else:
            pager.failed(result.error, result.detail, result.status)
        return None
    if isinstance(result, Fetched):
        headers = dict(result.headers)
        if key and kept is None:  # durable before it goes on: a kill costs at most the pages in flight
            ctx.keep(key, _encode_kept((result.status, headers, result.body)))
        return _delivered(request, result.status, headers, result.body, result.attempts, result.decoded, ctx)
    if pager is not None:
        pager.observe(request, None, None)
    ctx.count(ledger.FAILED, on=request.endpoint)
    ctx.count(ledger.failed(result.error), on=request.endpoint)
    await ctx.error(
        result.error,
        result.detail,
        endpoint=request.endpoint,
        page=request.page,
        attempts=result.attempts,
        status=result.status,
        url=safe_url(request.url),
        records_expected=pager.page_size if pager is not None else None,  # what the page would have held
    )
    return None


async def _fetched(request: PageRequest, params: FetchParams, ctx: Any) -> Fetched | FetchFailed:
    """The page from its server: rate-limited attempts, retries, the breaker."""
    # This stage's fetchers, one per endpoint (breaker, in-flight bound).
    fetchers: dict[str, Fetcher] = ctx.resource(("fetch", ctx.node, ctx.index), dict)
    fetcher = fetchers.get(request.endpoint)
    if fetcher is None:
        fetcher = fetchers[request.endpoint] = fetcher_for(request.endpoint, params, ctx)
    pager = request.pager
    return await fetcher.fetch(
        request.url,
        params=request.params,
        headers=request.headers,
        limiter=request.limiter,
        decode=pager.decode if pager is not None else None,  # the page is decoded once, here
    )


def _exchange(request: PageRequest, result: Fetched | FetchFailed) -> dict[str, Any]:
    """What `flow run --record` keeps of a page's exchange: the answer that
    settled it (the body as text where it is UTF-8), or why it failed."""
    from .outcomes import Fetched

    url = safe_url(request.url) + ("?" + urlencode(request.params) if request.params else "")
    if not isinstance(result, Fetched):
        return {"url": url, "error": result.error, "detail": result.detail, "status": result.status,
                "attempts": result.attempts}  # fmt: skip
    exchange: dict[str, Any] = {"url": url, "status": result.status, "headers": dict(result.headers)}
    try:
        exchange["body"] = result.body.decode("utf-8")
    except UnicodeDecodeError:
        exchange["body_base64"] = base64.b64encode(result.body).decode("ascii")
    exchange["attempts"] = result.attempts
    return exchange


def _played(request: PageRequest, ctx: Any) -> Fetched | FetchFailed:
    """flow test: the page's exchange as recorded; not recorded: a failure."""
    from .outcomes import Fetched, FetchFailed

    key = _tape_key(request)
    exchange = ctx.played(key)
    if exchange is None:
        return FetchFailed(request.url, "not_recorded", 0, None, f"no exchange recorded for {key}")
    attempts = exchange.get("attempts", 1)
    if "error" in exchange:
        detail = exchange.get("detail", "")
        return FetchFailed(request.url, exchange["error"], attempts, exchange.get("status"), detail)
    text = exchange.get("body")
    body = text.encode() if text is not None else base64.b64decode(exchange.get("body_base64", ""))
    headers = exchange.get("headers", {})
    return Fetched(request.url, exchange["status"], body, headers, attempts, _decoded(request, body))


def _decoded(request: PageRequest, body: bytes) -> Any:
    """A page taken from a journal or a recording, decoded here, once, as
    fetch does, for its planner and parse to reuse (None: not decodable)."""
    decode = request.pager.decode if request.pager is not None else None
    if decode is None:
        return None
    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return decode(body)
    return None


_encode_kept = msgspec.msgpack.Encoder().encode
_decode_kept = msgspec.msgpack.Decoder(tuple[int, dict[str, str], bytes]).decode


def _page_key(request: PageRequest) -> str:
    """A page's identity for a resumed run: its endpoint, path and query,
    not its host (the embedded mocks listen on a new port each run)."""
    rest = request.url.partition("://")[2]
    path = rest[rest.find("/") :] if "/" in rest else "/"
    return f"{request.endpoint} {path}?{urlencode(sorted(request.params.items()))}"


def _tape_key(request: PageRequest) -> str:
    """A page's key in a recording; a style: auto probe's apart from the
    page that asks the same query (json-server's page 0)."""
    return ("probe " if request.probe else "") + _page_key(request)


def _recalled(request: PageRequest, kept: bytes) -> Fetched:
    """A page the run being resumed fetched, as fetched again (no attempt:
    no request is sent)."""
    from .outcomes import Fetched

    status, headers, body = _decode_kept(kept)
    return Fetched(request.url, status, body, headers, 0, _decoded(request, body))


def _delivered(request: PageRequest, status: int, headers: dict[str, str], body: bytes, attempts: int,
               decoded: Any, ctx: Any) -> PageResponse:  # fmt: skip
    """A page to pass on, fetched or recalled: told to its planner, counted as fetched."""
    if request.pager is not None:
        request.pager.observe(request, body, headers, decoded)
    ctx.count(ledger.FETCHED, on=request.endpoint)
    return PageResponse(request, status, body, headers, attempts, decoded)


KIND = fetch
