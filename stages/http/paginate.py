"""`paginate`: plan an endpoint's page requests (a source).

Where the style allows, pages are requested concurrently: page, skip_limit
and link plan every page once the first answer gives the total; offset keeps
`prefetch` pages in flight until a short or empty page shows the end (pages
planned past it come back empty and are counted as overshoot); cursor is
strictly sequential. Each request carries this endpoint's planner; the
`fetch` that answers it, in this node or downstream, reports back to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec

from flow import ledger
from flow.registry import Params, stage

from .paging import Pager, PageRequest
from .planning import plan_paginate

if TYPE_CHECKING:
    from .detect import Answer, Detected

_DEFAULTS = {  # style -> (items_path, total_path, cursor_path)
    "page": (None, "total_pages", None),
    "skip_limit": ("products", "total", None),
    "offset": (None, None, None),
    "link": (None, None, None),
    "cursor": ("data", None, "next_cursor"),
}


class PaginateParams(Params):
    url: str  # http(s)://..., or ${mocks.NAME.url}... (filled in when the mocks start)
    # auto: read from up to three probe answers (stages.http.detect), said on stderr and in run.json
    style: Literal["auto", "page", "skip_limit", "offset", "link", "cursor"]
    page_size: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 20
    params: dict[str, str] = {}  # static query parameters
    headers: dict[str, str] = {}  # e.g. {x-api-key: "${API_KEY}"}
    items: str | None = None  # body key holding the records (None: the body is a list)
    total: str | None = None  # body key holding the total (items, or pages if 'total_pages')
    cursor: str | None = None  # body key holding the next cursor
    max_pages: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_items: Annotated[int, msgspec.Meta(ge=1)] | None = None
    prefetch: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4  # offset style: pages in flight
    give_up_after: Annotated[int, msgspec.Meta(ge=1)] = 4  # pages failed in a row that end the walk

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://", "${")):
            raise ValueError(f"url: expected an http:// or https:// URL, got {self.url[:80]!r}")


def _pager(params: PaginateParams, endpoint: str, detected: Detected | None = None) -> Pager:
    """The endpoint's pager: the style's keys, or those detected; keys set
    in the params win either way."""
    style = detected.style if detected is not None else params.style
    items, total, cursor = detected[1:4] if detected is not None else _DEFAULTS[style]
    return Pager(
        endpoint,
        params.url,
        style,
        params.page_size,
        params=params.params,
        headers=params.headers,
        items_path=params.items if params.items is not None else items,
        total_path=params.total if params.total is not None else total,
        cursor_path=params.cursor if params.cursor is not None else cursor,
    )


def _server(params: PaginateParams) -> list[str]:
    """flow.placement: the server this source walks (its budget counts every
    client of it), by its mock's name before the mocks start."""
    if params.url.startswith("${mocks."):
        return [f"mock:{params.url[len('${mocks.') :].split('.', 1)[0]}"]
    return [f"host:{urlsplit(params.url).netloc}"]


@stage("paginate", PaginateParams, consumes=None, produces=PageRequest, plan=plan_paginate, affinity=_server)
async def paginate(source: None, params: PaginateParams, ctx: Any) -> AsyncIterator[PageRequest]:
    """Plan page requests for one endpoint, concurrently where the style allows."""
    detected = None
    if params.style == "auto":
        found: list[Detected] = []
        async for probe in _probe(params, ctx, found):
            yield probe
        if not found:
            return
        detected = found[0]
    pager = _pager(params, ctx.node, detected)
    pager.tally = ctx.count  # pages planned and abandoned, on this source's ledger
    yield pager.request(0)
    if pager.style == "cursor":
        walk = _cursor_walk(pager, params, ctx)
    else:
        # Every other style waits for the first answer: it may hold the total
        # and shows the page size the server really serves (a cap).
        first = await pager.outcome(0)
        if first is None and pager.style != "offset":
            await ctx.error("pagination_stopped", "the first page failed, so the total is unknown", page=0)
            return
        walk = _total_walk(pager, params, ctx) if pager.total_pages else _open_walk(pager, params, ctx)
    reported = False
    async for request in walk:
        if pager.capped is not None and not reported:  # known after page 0, or page 1 (no total)
            reported = True
            asked, served = pager.capped
            ctx.record_event("page_size_capped", endpoint=ctx.node, asked=asked, served=served)
        yield request


async def _probe(params: PaginateParams, ctx: Any, found: list[Detected]) -> AsyncIterator[PageRequest]:
    """style: auto: probe requests until the answers name a style (put in
    `found`, and said), or an error saying what was seen."""
    from .detect import Probe, Refused, decide

    answers: list[Answer] = []
    while True:
        try:
            step = decide(answers, params.page_size)
        except Refused as refused:
            await ctx.error("paging_unknown", f"style: auto: {refused}", url=params.url)
            return
        if isinstance(step, tuple):
            ctx.say("paging_detected", f"paginate: {step.describe()}", style=step.style, items=step.items,
                    total=step.total, cursor=step.cursor, probes=len(answers), seen=step.seen)  # fmt: skip
            found.append(step)
            return
        probe = Probe(step)
        ctx.count("probes")
        query = {**params.params, **step}
        yield PageRequest(ctx.node, params.url, query, params.headers, 0, probe, probe=True)
        answers.append(await probe.outcome())


def _limit(pager: Pager, params: PaginateParams) -> int:
    """Pages to plan at most, by `max_pages` and `max_items` (at the page size
    the server really serves)."""
    limit = params.max_pages or 10**12
    if params.max_items:
        limit = min(limit, -(-params.max_items // pager.page_size))
    return limit


async def _cursor_walk(pager: Pager, params: PaginateParams, ctx: Any) -> AsyncIterator[PageRequest]:
    """Strictly sequential: each page's answer names the next."""
    page = 0
    while page + 1 < _limit(pager, params):
        if await pager.outcome(page) is None:
            await ctx.error("pagination_stopped", "a page failed, so the next cursor is unknown", page=page)
            return
        cursor = pager.cursors.get(page)
        if not cursor or await _repeated(ctx, pager):
            return
        page += 1
        yield pager.request(page, cursor)


async def _total_walk(pager: Pager, params: PaginateParams, ctx: Any) -> AsyncIterator[PageRequest]:
    """The total is known: every page at once, as fast as they are taken.
    Pages never planned (the walk gave up, or the run stopped) are counted
    as not attempted: a known loss."""
    assert pager.total_pages is not None
    end, planned = min(pager.total_pages, _limit(pager, params)), 1
    try:
        for page in range(1, end):
            if pager.failed_in_a_row >= params.give_up_after:
                await _gave_up(ctx, pager, page, end)
                return
            if await _repeated(ctx, pager):
                return
            planned += 1  # before the yield: a walk closed there has handed this page on
            yield pager.request(page)
    finally:
        if end > planned:
            ctx.count(ledger.NOT_ATTEMPTED, end - planned)


async def _open_walk(pager: Pager, params: PaginateParams, ctx: Any) -> AsyncIterator[PageRequest]:
    """No total: keep `prefetch` pages in flight until a short or empty page
    marks the end. The failure streak counts pages in the order their answers
    came back and is checked before every new page, so pages still in flight
    never hide it, however fast failures arrive."""
    planned, limit = 1, _limit(pager, params)
    while planned < limit and (pager.end is None or planned <= pager.end):
        if pager.failed_in_a_row >= params.give_up_after:
            await _gave_up(ctx, pager, planned, None)
            return
        if await _repeated(ctx, pager):
            return
        if planned - len(pager.items) < params.prefetch:  # pages in flight
            yield pager.request(planned)
            planned += 1
            continue
        await pager.changed()
    if pager.end is not None and planned > pager.end + 1:
        ctx.count("overshoot", planned - (pager.end + 1))  # pages planned past the end


async def _repeated(ctx: Any, pager: Pager) -> bool:
    """True (after one error) when the server serves the same records again."""
    if pager.repeated is None:
        return False
    page, earlier = pager.repeated
    why = f"page {page} holds the same records as page {earlier}: the server ignores the paging parameters"
    await ctx.error("paging_ignored", why, page=page)
    return True


async def _gave_up(ctx: Any, pager: Pager, page: int, end: int | None) -> None:
    why = f"{pager.failed_in_a_row} pages in a row failed; no page from {page} on is planned"
    # With a total, the pages never asked for are a known loss: the ledger
    # counts them (not attempted), the record says how many.
    await ctx.error("pagination_stopped", why, page=page, pages_not_attempted=end - page if end else None)


KIND = paginate
