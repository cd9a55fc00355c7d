"""Pagination bookkeeping: what `paginate` plans and `fetch` answers.

`paginate` plans PageRequests, each carrying its endpoint's `Pager`; the
`fetch` that answers a request (in the same node or one downstream)
reports the outcome through `request.pager.observe`, because where an API
ends (or what its next cursor is) is only known from its answers. A request
also carries the limiter its `rate_limit` stage assigned, so the budget
holds wherever the fetch runs. `flow validate` rejects a graph in which a
request could end without a fetch (the planner would wait for an answer).

The pager reads just what it needs from a page: the number of items, and
the total, next cursor or Link header, decoding the body into a struct built
from the configured paths (items are not parsed).

Styles:
    page        ?page=N&per_page=S, N from 1; total_pages or total in the body
    skip_limit  ?skip=O&limit=S; total in the body (dummyjson)
    offset      ?offset=O&limit=S; no total: the end is a short or empty page
    link        ?_page=N&_limit=S; X-Total-Count header (else the end is a short page)

A Link header naming a next page (GitHub, json-server) keeps a short page
from ending the walk, and shows a short first page to be a cap.
    cursor      ?cursor=C&limit=S; the next cursor from the previous page
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import msgspec

from flow import ledger


class PageRequest(msgspec.Struct, frozen=True):
    """One page to fetch. Must reach a `fetch`: its planner waits for the answer."""

    endpoint: str
    url: str
    params: dict[str, str]
    headers: dict[str, str]
    page: int  # 0-based position in the walk
    pager: Any = None  # the Pager to tell the outcome (None: nobody waits)
    limiter: Any = None  # the send budget its rate_limit assigned (None: unlimited)
    probe: bool = False  # style: auto's probe (stages.http.detect): answered to its planner only

    needs_answer: ClassVar[str] = "fetch"  # flow.graph: may end only in this kind of stage

    def abandon(self, reason: str) -> None:
        """The engine dropped this request: its page failed, for the planner
        (unless fetch already settled it: a page is fetched, failed or
        abandoned, once)."""
        if self.probe:
            self.pager.failed("abandoned", reason, None)
        elif self.pager is not None and self.page not in self.pager.items:
            self.pager.observe(self, None, None)
            self.pager.tally(ledger.ABANDONED)


class PageResponse(msgspec.Struct, frozen=True):
    request: PageRequest
    status: int
    body: bytes
    headers: dict[str, str]
    attempts: int
    # The body as its pager decoded it (`Pager.decode`: records as Raw, total,
    # cursor), so that parse need not decode it again; None: not decoded.
    decoded: Any = None


def page_decoder(
    items_path: str | None, total_path: str | None = None, cursor_path: str | None = None
) -> Callable[[bytes], Any]:
    """A page's decoder: into an envelope of just these paths (records kept
    raw, as msgspec.Raw; nothing else built), or a bare list of records,
    whatever the style says."""
    fields: list[tuple[str, Any, Any]] = []
    if items_path:
        fields.append((items_path, list[msgspec.Raw], []))
    if total_path:
        fields.append((total_path, int | None, None))
    if cursor_path:
        fields.append((cursor_path, str | None, None))
    shape: Any = msgspec.defstruct("Envelope", fields) | list[msgspec.Raw] if fields else list[msgspec.Raw]
    return msgspec.json.Decoder(shape).decode


def page_records(decoded: Any, items_path: str | None) -> list[msgspec.Raw] | None:
    """The records of a decoded page: a bare list is records whatever the
    path; an envelope's, if it was decoded with `items_path`. None: this
    decoding does not hold them."""
    if isinstance(decoded, list):
        return decoded
    if decoded is None or items_path is None:
        return None
    records = getattr(decoded, items_path, None)
    return records if isinstance(records, list) else None


def _header(headers: dict[str, str] | None, name: str) -> str | None:
    """A header by name, whatever its case (HTTP/2 sends them lower-cased)."""
    if not headers:
        return None
    found = headers.get(name)
    if found is None:
        lowered = name.lower()
        found = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return found


def _links_next(headers: dict[str, str]) -> bool:
    link = _header(headers, "Link")
    return bool(link) and 'rel="next"' in link.replace("rel=next", 'rel="next"').lower()


QUERY = {  # style -> (position parameter, size parameter)
    "page": ("page", "per_page"),
    "skip_limit": ("skip", "limit"),
    "offset": ("offset", "limit"),
    "link": ("_page", "_limit"),
    "cursor": ("cursor", "limit"),
}


class Pager:
    """What is known about one endpoint's pages; `observe` is called by fetch."""

    def __init__(
        self,
        endpoint: str,
        url: str,
        style: str,
        page_size: int,
        *,
        params: dict[str, str],
        headers: dict[str, str],
        items_path: str | None,
        total_path: str | None,
        cursor_path: str | None,
    ) -> None:
        self.endpoint, self.url, self.style, self.page_size = endpoint, url, style, page_size
        self.params, self.headers = params, headers
        self.items_path, self.total_path, self.cursor_path = items_path, total_path, cursor_path
        self.decode = page_decoder(items_path, total_path, cursor_path)
        self.items: dict[int, int | None] = {}  # page -> items on it, None if it failed
        self.total_pages: int | None = None
        self.cursors: dict[int, str | None] = {}  # page -> cursor for the page after it
        self.end: int | None = None  # the last page, once known
        self.failed_in_a_row = 0  # pages observed failed since the last good one
        self.capped: tuple[int, int] | None = None  # (asked, served) when the server caps the page size
        self._maybe_capped: tuple[int, int] | None = None  # a short first page, no total: cap or end
        self._seen: dict[int, int] = {}  # cheap key of a page's records -> the first page with it
        self._hashed: dict[int, int] = {}  # full hash of a page's records -> the first page with it
        self.repeated: tuple[int, int] | None = None  # (page, earlier page) with the same records
        import asyncio  # here: flow validate needs only the item kinds above

        self._changed = asyncio.Event()
        # The source's ledger (its planner sets it to ctx.count): pages planned
        # and pages abandoned are counted here, fetched and failed by fetch.
        self.tally: Callable[[str], None] = lambda counter: None

    def request(self, page: int, cursor: str | None = None) -> PageRequest:
        position, size = QUERY[self.style]
        query = dict(self.params)
        query[size] = str(self.page_size)
        if self.style in ("page", "link"):
            query[position] = str(page + 1)
        elif self.style in ("skip_limit", "offset"):
            query[position] = str(page * self.page_size)
        elif cursor:
            query[position] = cursor
        self.tally(ledger.PLANNED)
        return PageRequest(self.endpoint, self.url, query, self.headers, page, self)

    def observe(
        self, request: PageRequest, body: bytes | None, headers: dict[str, str] | None, decoded: Any = None
    ) -> None:
        """Record a page's outcome (body None: it failed for good); `decoded`:
        the body already decoded by `decode`, if it was."""
        page = request.page
        count = items = pages = cursor = None
        try:
            if body is not None:
                decoded = self.decode(body) if decoded is None else decoded
                count, items, pages, cursor = self._read(decoded, headers, page)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            pass  # not a page of this shape: parse reports the body itself
        more = headers is not None and _links_next(headers)  # a Link header names a page after this one
        if page == 0 and count and count < self.page_size:
            self._short_first_page(count, items, more)
        if page == 1 and count and self._maybe_capped is not None:
            self.capped = self._maybe_capped  # records after a short first page: it was a cap
        self.items[page] = count
        self.failed_in_a_row = self.failed_in_a_row + 1 if count is None else 0
        if self.total_pages is None:
            self.total_pages = pages if pages is not None else None if items is None else (
                math.ceil(items / self.page_size)
            )
        if self.style == "cursor":
            self.cursors[page] = cursor
        if count is not None and count < self.page_size and not more:
            end = page if count > 0 else page - 1  # -1: there are no pages at all
            if self.end is None or end < self.end:
                self.end = end
        self._changed.set()

    def _read(
        self, decoded: Any, headers: dict[str, str] | None, page: int = 0
    ) -> tuple[int, int | None, int | None, str | None]:
        """(items on the page, total items or None, total pages or None, next cursor)."""
        items = pages = cursor = None
        records = page_records(decoded, self.items_path) or []
        self._fingerprint(page, records)
        count = len(records)
        if not isinstance(decoded, list):
            total = getattr(decoded, self.total_path) if self.total_path else None
            cursor = getattr(decoded, self.cursor_path) if self.cursor_path else None
            if self.total_path == "total_pages":
                pages = total
            else:
                items = total
        counted = _header(headers, "X-Total-Count") if self.style == "link" else None
        if counted is not None:
            # A header that is not a count is no total: the walk ends on a short page.
            items = int(counted.strip()) if counted.strip().isdigit() else items
        return count, items, pages, cursor

    def _short_first_page(self, count: int, items: int | None, more: bool) -> None:
        """The first page holds fewer records than asked (only it is planned
        yet). With a total above that, or a Link header naming a next page,
        the server caps the page size: its cap is the page size from now on. Without a total, an offset-style
        API cannot say whether this is a cap or the end, so the walk goes on
        at that size: an empty next page ends it (at most `prefetch`
        requests more, counted as overshoot), records confirm a cap."""
        if (items is not None and items > count) or more:
            self.capped, self.page_size = (self.page_size, count), count
        elif items is None and self.style in ("offset", "skip_limit"):
            self._maybe_capped, self.page_size = (self.page_size, count), count

    def _fingerprint(self, page: int, records: list[Any]) -> None:
        """A server that ignores the paging parameters serves the same
        records on every page: a page with all of an earlier page's records,
        in order, is noted in `repeated`, for the planner to stop.

        Every page is known first by a cheap key: its records' lengths and
        its first and last records. Only a page whose cheap key came before,
        and the first page, are hashed in full (all their records' text, ~35
        µs for 100 records, 3% of a run when done for every page): pages
        that share records (pinned records, fixed-width rows) then still
        differ, and no page is taken for another on a few records. A repeat
        of the first page, the usual shape of ignored paging, is seen on its
        first showing; a later page's records on their third showing (the
        second is hashed, the first was not)."""
        if len(records) < 2:  # one record may well come again (a duplicate), a page of them not
            return
        lengths = tuple(map(len, records))
        cheap = hash((lengths, bytes(records[0]), bytes(records[-1])))
        if self._seen.setdefault(cheap, page) == page and page:
            return  # no page before had this key: it repeats none
        first = self._hashed.setdefault(hash((b"".join(records), lengths)), page)
        if first != page and self.repeated is None:
            self.repeated = (page, first)

    async def outcome(self, page: int) -> int | None:
        """Wait until `page` has been observed; its item count (None: failed)."""
        while page not in self.items:
            self._changed.clear()
            await self._changed.wait()
        return self.items[page]

    async def changed(self) -> None:
        self._changed.clear()
        await self._changed.wait()
