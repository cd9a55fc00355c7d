"""`flow plan`'s hooks of the HTTP stages: what paginate, rate_limit and
fetch tell of a source's walk (a flow.plan.SourcePlan).

paginate makes one first request, unless offline: a plain GET of page 0
with its pager's own query, retried as the fetch would retry it, and read by
the pager itself (a body total, total_pages, X-Total-Count, a page size the
server caps). With `style: auto` it sends stages.http.detect's probes
instead, one after the other, each counted as a request. Where no answer
tells the pages (offline; offset and cursor walks, which have no total), the
mock the graph declares for the URL does ("declared by the mock"), else
max_pages/max_items bound the walk, else the pages stay unknown.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from flow.plan import SourcePlan

    from .fetch import FetchParams
    from .paginate import PaginateParams
    from .paging import Pager
    from .rate_limit import RateLimitParams

NO_LIMIT = 10**12  # paginate's _limit without max_pages or max_items


def plan_rate_limit(params: RateLimitParams, source: SourcePlan) -> None:
    """The send budget: the stage's own sliding-window limiter, by name."""
    from flow.plan import RateBudget

    from .limiter import SlidingWindowLimiter

    assert params.rate.count is not None  # 'off' is rejected when decoded
    name = params.name or source.stage_node
    count, window, margin = params.rate.count, params.rate.window, float(params.margin)

    def make() -> SlidingWindowLimiter:
        return SlidingWindowLimiter(count, window, margin=margin, name=name)

    source.rate = RateBudget(name, count, window, margin, make)


def plan_fetch(params: FetchParams, source: SourcePlan) -> None:
    """Pages in flight per endpoint, each attempt's timeout, the retries."""
    source.concurrency = params.concurrency
    source.timeout = float(params.timeout)
    source.attempts = params.retry.retries + 1
    source.backoff = (float(params.retry.backoff), float(params.retry.max))
    source.bad_body_fails = params.expect_json
    source.retry_after_cap = float(params.retry.retry_after_cap)


def plan_paginate(params: PaginateParams, source: SourcePlan) -> Awaitable[None] | None:
    """The pages: from one first request (awaited once fetch's hook has
    set the timeout and retries), or, offline, from the declared mock."""
    source.url, source.style, source.prefetch = params.url, params.style, params.prefetch
    source.declared = source.declared_at(params.url)
    if source.offline:
        _offline(params, source)
        return None
    return _first_request(params, source)


def _offline(params: PaginateParams, source: SourcePlan) -> None:
    from .detect import Detected, first_probe
    from .paginate import _DEFAULTS

    declared, detected = source.declared, None
    if params.style == "auto":
        if declared is None or declared.style is None:
            source.notes.append("style: auto is not probed offline and no mock declares this server")
            return
        detected = Detected(declared.style, *_DEFAULTS[declared.style], f"the mock {declared.name}")
        source.detected = (
            f"style {declared.style}, as the mock {declared.name} serves it (declared by the mock)"
        )
        # The probes stages.http.detect sends such a server: its first, and
        # for bare lists (offset style) the offset probe.
        source.probes = [{**params.params, **first_probe(params.page_size)}]
        if declared.style == "offset":
            source.probes.append({**params.params, "offset": "0", "limit": str(params.page_size)})
    pager = _pager(params, source, detected)
    if declared is None:
        source.notes.append("time unknown: no latency offline (a first request, or a mock, tells it)")
        _unknown(params, source, pager, "offline: no request made, and no mock declares this server")
        return
    pager.page_size = min(pager.page_size, declared.page_cap)
    _declared_pages(params, source, pager)


async def _first_request(params: PaginateParams, source: SourcePlan) -> None:
    """Page 0, or style: auto's probes; page 0 after the probes only where
    its total tells the pages and no probe's answer did."""
    import aiohttp

    from flow.plan import PlanFailed

    from .urls import safe_url

    async with aiohttp.ClientSession() as session:
        detected = got = None
        if params.style == "auto":
            detected, got = await _detect(session, params, source)
        pager = _pager(params, source, detected)
        request = pager.request(0)
        if got is not None and source.probes[-1] != request.params:  # the probes asked for another page
            _, records, _, _ = pager._read(pager.decode(got.body), got.headers)
            if records is not None or pager.style in ("offset", "cursor"):
                source.latency = got.seconds
                _without_page_0(params, source, pager, records)
                return
            got = None  # total_pages at another page size: page 0 tells ours
        if got is None:
            got = await _get(session, source, request.url, request.params, request.headers)
        if got.body is None:
            where = safe_url(request.url, request.params)
            raise PlanFailed(f"the first request GET {where} failed: {got.why}")
        source.latency = got.seconds
        pager.observe(request, got.body, got.headers)
    if pager.capped is not None:
        asked, served = pager.capped
        source.notes.append(f"the server serves {served} records a page (asked for {asked})")
    if pager.total_pages:  # paginate then plans every page at once
        _, records, _, _ = pager._read(pager.decode(got.body), got.headers)
        source.walk, source.records = "total", records
        total = "the first answer's " + (
            f"total of {records} records" if records is not None else "total_pages"
        )
        _bound(params, source, pager, pager.total_pages, total)
        return
    if pager.style != "cursor":
        source.walk = "open"  # no total: prefetch pages in flight until a short or empty one
    if pager.end is not None:  # a short first page: the end
        _bound(params, source, pager, 1, "the first answer (a short page: the end)")
    else:
        _without_page_0(params, source, pager, None)


def _without_page_0(params: PaginateParams, source: SourcePlan, pager: Pager, records: int | None) -> None:
    """The pages where page 0 does not tell them: a probe's total, the
    declared mock, max_pages/max_items, or unknown."""
    if records is not None:
        source.records = records
        pages = max(1, math.ceil(records / pager.page_size))
        _bound(params, source, pager, pages, f"the probe's total of {records} records")
    elif source.declared is not None:
        _declared_pages(params, source, pager)
    else:
        _unknown(
            params, source, pager, f"a {pager.style} walk has no total: its end shows only in its answers"
        )


def _pager(params: PaginateParams, source: SourcePlan, detected: Any) -> Pager:
    """The source's pager (paginate's own), and the query of each page."""
    from .paginate import _pager as pager_of

    pager = pager_of(params, source.node, detected)
    first = pager.request(0).params  # as asked, before the server may cap the size
    source.style = pager.style
    source.walk = {"cursor": "cursor", "offset": "open"}.get(pager.style, "total")

    def query(page: int) -> dict[str, str] | None:
        if page == 0:
            return first
        return None if pager.style == "cursor" else pager.request(page).params  # a cursor: from the answers

    source.query = query
    return pager


def _declared_pages(params: PaginateParams, source: SourcePlan, pager: Pager) -> None:
    declared = source.declared
    assert declared is not None
    size = pager.page_size
    # An offset walk ends on a short or empty page; the others on their total.
    pages = (
        declared.records // size + 1 if source.walk == "open" else max(1, math.ceil(declared.records / size))
    )
    source.records = declared.records
    _bound(params, source, pager, pages, f"{declared.records} records, declared by the mock {declared.name}")


def _bound(params: PaginateParams, source: SourcePlan, pager: Pager, pages: int, why: str) -> None:
    """The pages to the end, within max_pages/max_items."""
    from .paginate import _limit

    limit = _limit(pager, params)
    source.page_size, source.pages_from = pager.page_size, why
    source.max_pages = limit if limit < NO_LIMIT else None
    source.pages = min(pages, limit)
    if limit < pages:
        source.pages_from += f", cut to {limit} by max_pages/max_items"


def _unknown(params: PaginateParams, source: SourcePlan, pager: Pager, why: str) -> None:
    from .paginate import _limit

    limit = _limit(pager, params)
    source.page_size = pager.page_size
    if limit < NO_LIMIT:  # the walk stops there at the latest
        _bound(params, source, pager, limit, f"at most {limit}, by max_pages/max_items ({why})")
    else:
        source.notes.append(f"pages unknown: {why} (set max_pages, or declare the server as a mock)")


class Got(NamedTuple):
    status: int | None
    body: bytes | None  # None: failed for good
    headers: dict[str, str]
    seconds: float  # the answer's latency
    why: str = ""  # why it failed


async def _get(session: Any, source: SourcePlan, url: str, query: Mapping[str, str],
               headers: Mapping[str, str]) -> Got:  # fmt: skip
    """GET as the fetch would: its timeout, its retries with their mean
    backoff; a 2xx body that is not JSON fails where the fetch expects JSON."""
    import asyncio  # here: `flow validate` imports this module, and needs no asyncio

    import aiohttp
    import msgspec

    from .retry import retryable_status

    timeout = aiohttp.ClientTimeout(total=source.timeout if math.isfinite(source.timeout) else 10)
    why, status = "", None
    for attempt in range(1, source.attempts + 1):
        source.planning_requests += 1
        started = time.perf_counter()
        try:
            async with session.get(url, params=query, headers=headers, timeout=timeout) as response:
                status, body = response.status, await response.read()
                answered = dict(response.headers)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            why = (
                f"{type(exc).__name__}: {exc}"
                if str(exc)
                else f"{type(exc).__name__} (timeout {timeout.total:g} s)"
            )
        else:
            seconds = time.perf_counter() - started
            if 200 <= status < 300:
                try:
                    if source.bad_body_fails:
                        msgspec.json.decode(body)
                    return Got(status, body, answered, seconds)
                except msgspec.DecodeError:
                    why = f"HTTP {status} with a {len(body)}-byte body that is not JSON"
            else:
                why = f"HTTP {status}"
                if not retryable_status(status):
                    return Got(status, None, answered, seconds, why + " (not retried)")
        if attempt < source.attempts:
            await asyncio.sleep(source.backoff_after(attempt))
    return Got(status, None, {}, 0.0, f"{why} ({source.attempts} attempts)")


async def _detect(session: Any, params: PaginateParams, source: SourcePlan) -> tuple[Any, Got]:
    """style: auto: the probes, as paginate sends them, until the answers
    name a style; (what was found, the last probe's answer)."""
    from flow.plan import PlanFailed

    from .detect import Answer, Refused, decide

    answers: list[Answer] = []
    got = None
    while True:
        try:
            step = decide(answers, params.page_size)
        except Refused as refused:
            raise PlanFailed(f"style: auto: {refused}") from None
        if isinstance(step, tuple):
            source.detected = step.describe()
            assert got is not None
            return step, got
        query = {**params.params, **step}
        source.probes.append(query)
        got = await _get(session, source, params.url, query, params.headers)
        if got.body is None:
            answers.append(Answer(query, None, {}, got.why, got.status))
        else:
            answers.append(Answer(query, got.body, got.headers))
