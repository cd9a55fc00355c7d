"""`vendor`: send each job to its vendor, and take the vendor's answer.

The vendor is named by a payload field (`route`, default `vendor`), else
`default`. Each vendor has its own sliding-window rate limit (every
attempt, retries included), retries with backoff (honouring Retry-After)
and circuit breaker: the `fetch` stage's machinery, with a POST.

    sync    POST url {"request_id", "payload"}                -> 200 {"status", "result", "error"}
    async   POST url {"request_id", "payload", "callback_url"} -> 202; later the vendor POSTs the
            result, signed, to callback_url = SERVICE/vendor-webhook/VENDOR (stages.jobs.webhooks),
            waited for at most `callback_timeout`

Every job ends as a JobResult: `complete` with the vendor's result, or
`failed` with why (the vendor refused it, the calls failed for good, no
callback came in time, no such vendor). Nothing is stored here: the
`job_store` sink ends the job, once.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import msgspec

from flow.registry import ConcurrentParams, Params, stage
from flow.units import Duration, Rate
from stages.http.fetch import BreakerParams, FetchParams, RetryParams, fetcher_for
from stages.http.outcomes import FetchFailed

from .items import Job, JobResult

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class VendorSpec(Params):
    url: str  # the vendor's endpoint: http(s)://..., or ${mocks.NAME.url}/...
    mode: Literal["sync", "async"] = "sync"
    rate_limit: Rate = Rate.default("5/s")  # sends in any sliding window, retries included
    secret: str | None = None  # async: the shared secret its callbacks are signed with
    callback_timeout: Duration = Duration.default(30)  # async: how long a job waits for its callback
    timeout: Duration = Duration.default(10)  # one attempt
    retry: RetryParams = msgspec.field(default_factory=RetryParams)
    breaker: BreakerParams = msgspec.field(default_factory=BreakerParams)
    headers: dict[str, str] = {}  # e.g. {x-api-key: "${VENDOR_KEY}"}

    def __post_init__(self) -> None:
        if self.mode == "async" and not self.secret:
            raise ValueError("secret: an async vendor's callbacks are signed; name the shared secret")
        if self.rate_limit.count is None:
            raise ValueError("rate_limit: a vendor has a limit; write it (e.g. 5/s)")


class VendorParams(ConcurrentParams, kw_only=True):
    vendors: dict[str, VendorSpec]
    route: str = "vendor"  # the payload field naming a job's vendor
    default: str | None = None  # the vendor of a job naming none
    store: str = "jobs.db"  # the job store, to tell callbacks of known jobs from unknown ones
    max_skew: Duration = Duration.default(300)  # a callback's timestamp may be this far off now
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 64  # jobs in flight at once
    ordered: bool = False

    def __post_init__(self) -> None:
        if not self.vendors:
            raise ValueError("vendors: name at least one vendor")
        if self.default is not None and self.default not in self.vendors:
            raise ValueError(f"default: no vendor '{self.default}' (vendors: {', '.join(self.vendors)})")


class Vendors:
    """One vendor stage's calls: a fetcher and a limiter per vendor, the
    callbacks waited for, and the webhook route (registered when made)."""

    def __init__(self, params: VendorParams, ctx: Any) -> None:
        from stages.http.limiter import SlidingWindowLimiter

        from .store import store_for
        from .webhooks import Callbacks

        self.params, self.ctx = params, ctx
        self.store = store_for(ctx, params.store)
        self.callbacks = Callbacks()
        self.fetchers: dict[str, Any] = {}
        self.limiters = {
            name: SlidingWindowLimiter(spec.rate_limit.count or 1, spec.rate_limit.window, name=name)
            for name, spec in params.vendors.items()
        }
        for name, spec in params.vendors.items():
            ctx.gauge("flow.rate_limit", (spec.rate_limit.count or 0) / spec.rate_limit.window,
                      **{"flow.endpoint": name})  # fmt: skip
        if any(spec.mode == "async" for spec in params.vendors.values()):
            ctx.route("POST", "/vendor-webhook/{vendor}", self.webhook)

    def fetcher(self, name: str) -> Any:
        found = self.fetchers.get(name)
        if found is None:
            spec = self.params.vendors[name]
            # An async vendor's 202 may carry any body, or none: only a sync answer must be JSON.
            fetch = FetchParams(
                timeout=spec.timeout, retry=spec.retry, breaker=spec.breaker,
                concurrency=self.params.concurrency, expect_json=spec.mode == "sync",
            )  # fmt: skip
            found = self.fetchers[name] = fetcher_for(name, fetch, self.ctx)
        return found

    async def webhook(self, request: Any, vendor: str) -> Any:
        from flow.serving import json_response

        from .webhooks import result_of, verify

        spec = self.params.vendors.get(vendor)
        if spec is None or spec.mode != "async":
            return json_response({"error": f"no asynchronous vendor '{vendor}'"}, 404)
        body = await request.read()
        why = verify(spec.secret or "", request.headers, body, float(self.params.max_skew))
        if why is None:
            found = result_of(vendor, body)
            if isinstance(found, str):
                self.ctx.count("callbacks_malformed", on=vendor)
                return json_response({"error": found}, 400)
            state = self.store.status(found.request_id)
            if state is None:
                self.ctx.count("callbacks_unknown", on=vendor)
                return json_response({"error": f"no job {found.request_id}"}, 404)
            if state in ("complete", "failed"):
                self.ctx.count("callbacks_duplicate", on=vendor)
                return json_response({"request_id": found.request_id, "duplicate": True})
            self.callbacks.deliver(found)
            self.ctx.count("callbacks", on=vendor)
            return json_response({"request_id": found.request_id})
        self.ctx.count("callbacks_refused", on=vendor)
        return json_response({"error": why}, 401)


@stage("vendor", VendorParams, consumes=Job, produces=JobResult, per_item=True)
async def vendor(job: Job, params: VendorParams, ctx: Any) -> JobResult | None:
    """Send a job to its vendor (sync answer, or async webhook), within the vendor's limits."""
    vendors: Vendors = ctx.resource(("vendor", ctx.node, ctx.index), lambda: Vendors(params, ctx))
    named = job.payload.get(params.route) if isinstance(job.payload, dict) else None
    name = named if isinstance(named, str) else params.default
    spec = params.vendors.get(name or "")
    if name is None or spec is None:
        why = f"no vendor {name!r}: the payload's '{params.route}' names one of {', '.join(params.vendors)}"
        return JobResult(job.request_id, "failed", name, None, why)
    ctx.count("jobs", on=name)
    if job.resumed:
        ctx.count("jobs_resent", on=name)  # found running at start: sent again, with its request id
    try:
        return await _call(job, name, spec, vendors, ctx)
    except Exception as exc:  # a bug or an answer no branch foresaw: the job fails, with why; the rest go on
        return _failed(job, name, f"internal: {type(exc).__name__}: {exc}", ctx)
    finally:
        vendors.callbacks.forget(job.request_id)


async def _call(job: Job, name: str, spec: VendorSpec, vendors: Vendors, ctx: Any) -> JobResult | None:
    """The vendor's answer, or None: the service stopped before the job was
    sent (it stays running, and the store puts it back to pending)."""
    message: dict[str, Any] = {"request_id": job.request_id, "payload": job.payload}
    waiting = None
    if spec.mode == "async":
        message["callback_url"] = f"{ctx.service_url}/vendor-webhook/{name}"
        waiting = vendors.callbacks.expect(job.request_id)  # before the call: a callback may beat its 202
    headers = {**spec.headers, "Content-Type": "application/json", "Idempotency-Key": job.request_id}
    outcome = await vendors.fetcher(name).fetch(
        spec.url, headers=headers, limiter=vendors.limiters[name], body=_encode(message)
    )
    if waiting is not None and waiting.done():  # the callback came, whatever became of the call
        return _called_back(waiting.result(), name, ctx)
    if isinstance(outcome, FetchFailed):  # retries spent, the breaker open, a 4xx; or the service stopping
        if ctx.stopping.is_set() and outcome.error in ("stopped", "deadline", "circuit_open"):
            return None
        return _failed(job, name, f"{outcome.error}: {outcome.detail}", ctx)
    if waiting is None:
        return _answered(job, name, outcome.body, ctx)
    try:
        return _called_back(await asyncio.wait_for(waiting, float(spec.callback_timeout)), name, ctx)
    except TimeoutError:
        return _failed(job, name, f"no callback within {float(spec.callback_timeout):g} s", ctx)


def _called_back(result: JobResult, name: str, ctx: Any) -> JobResult:
    ctx.count(f"jobs_{result.status}", on=name)
    return result


def _answered(job: Job, name: str, body: bytes, ctx: Any) -> JobResult:
    """A sync vendor's answer as the job's result."""
    from .webhooks import reason

    try:
        data = _decode(body)
    except msgspec.DecodeError:
        data = None
    status = data.get("status", "complete") if isinstance(data, dict) else None
    if status not in ("complete", "failed"):
        return _failed(job, name, f"the vendor's answer is not a result: {body[:120]!r}", ctx)
    ctx.count(f"jobs_{status}", on=name)
    return JobResult(job.request_id, status, name, data.get("result"), reason(status, data.get("error")))


def _failed(job: Job, name: str, why: str, ctx: Any) -> JobResult:
    ctx.count("jobs_failed", on=name)
    return JobResult(job.request_id, "failed", name, None, why)


KIND = vendor
