"""One HTTP GET done properly: rate limit, circuit breaker, retries, timeouts.

`Fetcher.fetch(url)` returns `Fetched` or `FetchFailed`, never raises for
what an endpoint does (only cancellation propagates). Per attempt, in order:

    wait while the breaker is open (not an attempt; gives up at the deadline,
    or once as many probes in a row have failed as a request has attempts:
    the endpoint is down, and waiting on would hold the run, page after page,
    to its deadline: `circuit_open`) -> take a permit (a probe when
    half-open) -> limiter slot (every attempt: first tries, retries and
    probes draw on the same budget; checked again right before the request
    is written, see stages.http.session) -> GET with connect/read/total timeouts
    and a body size cap -> classify:

    2xx                      success; with `check_json`, a body that is not
                             JSON (an HTML page, a cut-off body) is a failure
                             for the breaker and retried (invalid_json,
                             html_instead_of_json)
    429                      neutral for the breaker; retry after
                             max(backoff, Retry-After), and every caller of
                             the limiter holds off until then
    5xx, timeout, connection failure, retry with backoff
    301/302/303/307/308      followed here, not by aiohttp: each hop takes a
                             limiter slot (not the retry budget), at most 5
                             hops (too_many_redirects); a hop to another
                             origin leaves the configured headers behind
    other 4xx                neutral; not retried (http_404, ...)
    body over the size cap   neutral; not retried (body_too_large)
    certificate refused      a failure for the breaker; not retried: the same
                             certificate is refused again (tls_certificate)
    a leased budget's store  neutral; not sent, not retried: the store was asked
    unreachable              several times already (budget_unavailable)

No attempt starts, and no wait (a backoff, an open breaker) goes on, once
the run is stopped (`stop` set: Ctrl-C; `stopped`) or past its deadline
(`deadline`): a stopped run drains what is in flight instead of retrying.
A request still waiting for its send slot when the run stops (behind a
Retry-After hold, say) gives the slot back and is not sent (`stopped`).
After the last attempt the failure is named `<last error>_after_retries`
(`timeout_after_retries`, `http_503_after_retries`, ...). The response is
always released (async with), also on cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from flow._tls import import_deferring_ca_store

from .breaker import CircuitBreaker, Permit
from .limiter import BudgetUnavailable, SlidingWindowLimiter, Stopped, pause
from .outcomes import Fetched, FetchFailed, Hop, Retry, Timeouts
from .retry import RetryPolicy, parse_retry_after, retryable_status
from .session import UNLIMITED, Sending, Unlimited
from .urls import http_attributes, redirect_target, safe_url

if TYPE_CHECKING:
    import aiohttp
else:  # the CA store loads at the first TLS handshake, not at import (flow/_tls.py)
    aiohttp = import_deferring_ca_store("aiohttp")


_RAW_JSON = msgspec.json.Decoder(msgspec.Raw).decode
MAX_REDIRECTS = 5
ENDED = {"stopped": "the run was stopped", "deadline": "run.deadline reached"}


def _encoded(response: Any) -> bool:
    """The body comes compressed (aiohttp inflates it as it is read)."""
    return response.headers.get("Content-Encoding", "identity").strip().lower() != "identity"


class _TooLarge(Exception):
    pass


@dataclass
class Fetcher:
    session: aiohttp.ClientSession
    breaker: CircuitBreaker
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_bytes: int = 16 * 1024 * 1024
    deadline: float | None = None  # loop time after which no new attempt starts
    stop: asyncio.Event | None = None  # set: the run stopped, no new attempt starts (nor waits)
    rng: random.Random = field(default_factory=random.Random)
    on_event: Callable[[str, dict[str, Any]], None] | None = None  # retries and waits
    concurrency: int = 4  # requests in flight at once, taken before the limiter slot
    # The engine's telemetry, as a StageContext offers it (client_span,
    # histogram, counter, metering); None: no spans, no metrics.
    telemetry: Any = None
    limiter: SlidingWindowLimiter | Unlimited | None = None  # for calls that name none
    check_json: bool = False  # a 2xx body that is not JSON is a failure, retried
    # Without the limiter hook (stages.http.session.Sessions): for requests of no limiter.
    plain_session: aiohttp.ClientSession | None = None

    def __post_init__(self) -> None:
        self._in_flight = asyncio.Semaphore(self.concurrency)
        limit = self.timeouts  # made once: an attrs instance costs ~40 bytecodes
        self._timeout = aiohttp.ClientTimeout(total=limit.total, connect=limit.connect, sock_read=limit.read)
        t = self.telemetry
        self._spans = t is not None and t.tracing  # off: no per-attempt span work at all
        self._metering = t is not None and t.metering
        self._tick = getattr(t, "tick", None)  # the run's timeline: attempts per second, by send time
        endpoint = {"flow.endpoint": self.breaker.name}
        if self._metering:
            wait = t.histogram("flow.rate_limit.wait", "s", "time waiting for a send slot")
            self._wait = wait.bind(endpoint)
            self._requests = t.counter("flow.http.requests", "1", "HTTP attempts by status")
            self._durations = t.histogram("flow.http.duration", "s", "HTTP attempt duration")
            self._by_outcome: dict[str, tuple[Any, Any]] = {}  # outcome -> (requests, durations) series

    def _event(self, name: str, **attrs: Any) -> None:
        if self.on_event is not None:
            self.on_event(name, attrs)

    async def fetch(
        self,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        limiter: SlidingWindowLimiter | Unlimited | None = None,
        decode: Callable[[bytes], Any] | None = None,
        body: bytes | None = None,
    ) -> Fetched | FetchFailed:
        """GET `url` (POST `body` as JSON, if given: a redirect then ends it,
        as a failure); every attempt takes a slot of `limiter` first. With
        `check_json`, a 2xx body is checked by decoding it with `decode` (the
        result is `Fetched.decoded`: a page is decoded once), else to Raw."""
        limiter = limiter or self.limiter or UNLIMITED
        loop = asyncio.get_running_loop()
        last = Retry("", None, "", None)  # why the last attempt failed
        hops = 0  # redirects followed
        attempt = 0
        while attempt < self.policy.attempts:
            permit = await self._permit()
            ended = self._ended(loop.time())
            if ended is not None:  # a stopped run sends nothing new: it drains
                if not isinstance(permit, str):
                    permit.neutral(loop.time())
                why = f"{ENDED[ended]} before the next attempt"
                return FetchFailed(url, ended, attempt, last.status, why)
            if isinstance(permit, str):  # why no permit will come
                return FetchFailed(url, "circuit_open", attempt, last.status, permit)
            try:
                sent = (url, params, headers, attempt + 1, permit, limiter, decode, body)
                outcome = await self._attempt(*sent)
            except Stopped:  # while it waited for a send slot: nothing was sent
                why = f"{ENDED['stopped']} while the request waited for a send slot"
                return FetchFailed(url, "stopped", attempt, last.status, why)
            if outcome is None:
                continue  # the breaker opened while it waited for a slot: not an attempt
            if isinstance(outcome, Hop):  # followed here, so every hop takes a limiter slot
                hops += 1  # a hop is not a retry: it takes a limiter slot, not the retry budget
                last = Retry("redirect", outcome.status, outcome.detail, None)
                if hops > MAX_REDIRECTS:
                    why = f"{hops} hops, the last: {outcome.detail}"
                    return FetchFailed(url, "too_many_redirects", attempt + 1, outcome.status, why)
                url, params, headers = outcome.target
                continue
            attempt += 1
            if not isinstance(outcome, Retry):
                return outcome
            last = outcome
            if attempt < self.policy.attempts:
                wait = self.policy.wait(attempt, self.rng, last.retry_after)
                self._event("retry", attempt=attempt + 1, error=last.error, wait=wait)
                await pause(wait, self.stop)
        attempts = self.policy.attempts
        why = f"{attempts} attempts, the last: {last.detail}"
        return FetchFailed(url, f"{last.error}_after_retries", attempts, last.status, why)

    async def _attempt(
        self, url: str, params: Mapping[str, str] | None, headers: Mapping[str, str] | None, attempt: int,
        permit: Permit, limiter: Any, decode: Callable[[bytes], Any] | None, sent: bytes | None = None,
    ) -> Fetched | FetchFailed | Retry | Hop | None:  # fmt: skip
        """One attempt, from the bound on requests in flight to the verdict:
        the page, a failure for good, a retry, a redirect to follow, or None
        when the breaker opened while it waited for its slot (no attempt).
        Raises `Stopped` when the run stopped before the request was sent."""
        clock = asyncio.get_running_loop().time
        try:
            async with self._in_flight:
                slot = await self._slot(limiter, permit)
                if slot is None:
                    return None
                sending = Sending(limiter, slot, self.stop)
                status, body, response_headers = await self._get(url, params, headers, attempt, sending, sent)
        except (asyncio.CancelledError, Stopped):
            permit.neutral(clock())
            raise
        except _TooLarge:
            permit.neutral(clock())
            return FetchFailed(url, "body_too_large", attempt, None, f"over {self.max_bytes} bytes")
        except BudgetUnavailable as exc:  # not sent: no send may go unaccounted in a shared budget
            permit.neutral(clock())
            return FetchFailed(url, "budget_unavailable", attempt, None, str(exc))
        except TimeoutError:
            permit.failure(clock())
            return Retry("timeout", None, f"no complete answer within {self.timeouts}", None)
        except aiohttp.ClientConnectorCertificateError as exc:
            permit.failure(clock())
            return FetchFailed(url, "tls_certificate", attempt, None, str(exc.certificate_error))
        except (aiohttp.ClientError, OSError) as exc:
            permit.failure(clock())
            self._event("connection_error", error=type(exc).__name__)
            return Retry("connection_error", None, f"{type(exc).__name__}: {exc}", None)
        hop = redirect_target(status, response_headers, url, params, headers) if sent is None else None
        if hop is not None:
            permit.neutral(clock())
            return Hop(hop, status, f"HTTP {status} to {safe_url(hop[0])}")
        return self._judge(url, attempt, status, body, response_headers, permit, limiter, decode)

    async def _permit(self) -> Permit | str:
        """A breaker permit (a probe when half-open), waiting while the breaker
        is open (not an attempt); else why none will come: the deadline comes
        first, or the endpoint stays down. A dead endpoint thus costs the
        breaker's schedule, `attempts` cooldowns, once, not once per page:
        pages waiting on the probes fail together, later ones at once (until
        a cooldown has passed: then the next request is a probe)."""
        loop = asyncio.get_running_loop()
        breaker = self.breaker
        while True:
            permit = breaker.allow(loop.time())
            if permit is not None:
                return permit
            if self._ended(loop.time()):
                return "the run ended"
            if breaker.failed_probes >= self.policy.attempts:
                return f"breaker open: {breaker.failed_probes} probes in a row failed"
            wake = breaker.retry_at() or loop.time() + 0.05
            if self.deadline is not None and wake > self.deadline:
                return "breaker open at deadline"
            self._event("breaker_wait", until=wake)
            await pause(max(0.001, wake - loop.time()), self.stop)

    def _ended(self, now: float) -> str | None:
        """Why no new attempt may start: the run was stopped, or its deadline passed."""
        if self.stop is not None and self.stop.is_set():
            return "stopped"
        return "deadline" if self.deadline is not None and now >= self.deadline else None

    async def _slot(self, limiter: Any, permit: Any) -> float | None:
        """Take a send slot; None when the breaker opened meanwhile (the
        request must not reach the endpoint then)."""
        slot, waited = await limiter.take(self.stop)  # Stopped: the run stopped while it waited
        if self._metering:
            self._wait.record(waited)
        if waited > 0:
            self._event("rate_limit_wait", seconds=waited)
        if not permit.probe and self.breaker.state != "closed":
            permit.neutral(asyncio.get_running_loop().time())
            return None
        return slot

    def _judge(
        self, url: str, attempt: int, status: int, body: bytes, headers: Mapping[str, str], permit: Any,
        limiter: Any, decode: Callable[[bytes], Any] | None,
    ) -> Fetched | FetchFailed | Retry:  # fmt: skip
        """The verdict on an answer that is not a redirect: the page, a
        failure for good, or a retry (with a Retry-After, if any)."""
        now = asyncio.get_running_loop().time()
        if status == 204:  # No Content: a page without records, not a broken body
            body = b"[]"
        if 200 <= status < 300:
            decoded, undecodable = self._decoded(body, decode)
            if undecodable is None:
                permit.success(now)
                return Fetched(url, status, body, headers, attempt, decoded)
            permit.failure(now)  # the endpoint misbehaves: retried like a 5xx
            return Retry(undecodable[0], status, undecodable[1], None)
        if not retryable_status(status):
            permit.neutral(now)
            return FetchFailed(url, f"http_{status}", attempt, status, f"HTTP {status}, not retried")
        retry_after = self._answered(status, headers, permit, limiter)
        return Retry(f"http_{status}", status, f"HTTP {status}", retry_after)

    def _decoded(
        self, body: bytes, decode: Callable[[bytes], Any] | None
    ) -> tuple[Any, tuple[str, str] | None]:
        """(the body decoded by `decode` or None, why a 2xx body that should
        be JSON is not: an HTML page from a proxy, a body cut short). Without
        `decode`, the syntax is checked without building any object (msgspec
        validates while skipping to Raw, ~50 µs for 70 kB). (None, None) when
        checking is off."""
        if not self.check_json:
            return None, None
        try:
            if decode is not None:
                with contextlib.suppress(msgspec.ValidationError):  # JSON of another shape: checked below
                    return decode(body), None
            _RAW_JSON(body)
        except msgspec.DecodeError as err:
            kind = "html_instead_of_json" if body.lstrip()[:1] == b"<" else "invalid_json"
            return None, (kind, f"a {len(body)}-byte body that is not JSON: {err}")
        except RecursionError:
            # Valid, perhaps, but nested deeper than any decoder here allows: not
            # worth a retry (the same page comes back); parse reports the page.
            return None, None
        return None, None

    def _answered(self, status: int, headers: Mapping[str, str], permit: Any, limiter: Any) -> float | None:
        """A retryable status: 429 is neutral for the breaker, 5xx a failure.
        A `Retry-After` on any of them (seconds or an HTTP date) is honoured:
        the retry waits at least that long (capped); after a 429, which is
        about the client's rate, every sender of this limiter holds off too.
        Returns it, or None."""
        now = asyncio.get_running_loop().time()
        if status == 429:
            permit.neutral(now)
        else:
            permit.failure(now)
        retry_after = parse_retry_after(headers.get("Retry-After"), time.time())
        if retry_after is not None and status == 429:
            limiter.hold_until(now + min(retry_after, self.policy.retry_after_cap))
        return retry_after

    async def _get(
        self,
        url: str,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        attempt: int = 1,
        sending: Sending | None = None,
        body: bytes | None = None,
    ) -> tuple[int, bytes, Mapping[str, str]]:
        timeout = self._timeout
        if not self._spans:
            span_cm: Any = contextlib.nullcontext()
        else:
            attributes = http_attributes(url, params, attempt)
            attributes["url.full"] = self.telemetry.scrub(attributes["url.full"])
            span_cm = self.telemetry.client_span("GET" if body is None else "POST", attributes)
        loop = asyncio.get_running_loop()
        started, outcome = loop.time(), ""
        try:
            with span_cm as span:
                get = self._session(sending).request(
                    "GET" if body is None else "POST", url, params=params, headers=headers, data=body,
                    timeout=timeout, allow_redirects=False, trace_request_ctx=sending,
                )  # fmt: skip
                async with get as response:
                    outcome = str(response.status)
                    if span is not None:
                        span.set("http.response.status_code", response.status)
                        if response.status >= 400:
                            span.failed()
                    length = response.content_length
                    if length is not None and length <= self.max_bytes and not _encoded(response):
                        # A declared length within the cap, not compressed (aiohttp reads
                        # no more than it declares): one read, not a loop of chunks. A
                        # compressed body inflates past its length: counted as it comes.
                        return response.status, await response.read(), response.headers
                    chunks, size = [], 0
                    async for chunk in response.content.iter_chunked(65536):
                        size += len(chunk)
                        if size > self.max_bytes:
                            raise _TooLarge
                        chunks.append(chunk)
                    return response.status, b"".join(chunks), response.headers
        except BaseException as exc:
            outcome = outcome or type(exc).__name__  # no status: TimeoutError, ClientOSError, ...
            raise
        finally:
            self._measure(outcome, loop.time() - started)
            # On the timeline: a request that went on the wire (its limiter saw it
            # go, or, unlimited, an answer came back), at the moment it went.
            at = sending.sent if sending is not None else None
            if at is None and outcome.isdigit():  # unlimited (no hook saw it go): answered, so it went
                at = started
            if self._tick is not None and at is not None:
                self._tick("requests", self.breaker.name, at)
                if outcome == "429":
                    self._tick("throttled", self.breaker.name, at)

    def _session(self, sending: Sending | None) -> aiohttp.ClientSession:
        """The session with the limiter hook, unless nothing is limited."""
        if self.plain_session is not None and (sending is None or sending.limiter is UNLIMITED):
            return self.plain_session
        return self.session

    def _measure(self, outcome: str, seconds: float) -> None:
        if not self._metering or outcome == Stopped.__name__:  # stopped before the write: nothing sent
            return
        series = self._by_outcome.get(outcome)
        if series is None:  # the first attempt with this outcome: bind its series once
            # Semantic conventions: a status code when there was an answer, else
            # `error.type` (TimeoutError, ClientOSError, ...).
            attrs: dict[str, Any] = {"flow.endpoint": self.breaker.name}
            if outcome.isdigit():
                attrs["http.response.status_code"] = int(outcome)
            else:
                attrs["error.type"] = outcome
            series = self._by_outcome[outcome] = (self._requests.bind(attrs), self._durations.bind(attrs))
        series[0].add(1)
        series[1].record(seconds)
