"""`paginate: {style: auto}`: an API's paging style, read from its answers.

Before planning pages, the planner sends up to three probe requests. They
go through the node's rate limit, retries and breaker like any page (the
server's budget counts them), and their records are not passed on: the
walk then starts at page 0 of the style found, so the output is the one an
explicit `style:` gives.

    1. ?_page=1&_limit=S   json-server's parameters; other APIs ignore them
       (a 4xx answer: asked again without paging parameters)
    2. ?offset=0&limit=S   only when the answers so far are bare lists
                           without paging headers
    3. no paging parameters, only when both answered an empty list (an API
                           that takes unknown parameters as filters answers
                           `[]` to them, and is refused)

What the answers show, in this order:

    Link header: next URL with _page                 link
                 next URL with page                  page (its end: a short page)
    X-Total-Count header                             link
    {"total_pages": N, <records>: [...]}             page
    {"next_cursor"|"nextCursor": C, <records>}       cursor
    {"total": N, "skip": ..., <records>}             skip_limit
    {"total": N, "offset": ..., <records>}           offset, with the total
    {"total": N, "page": ..., <records>}             page, total records
    a bare list that offset/limit cuts to S or less  offset

Anything else is refused with what was seen (status, headers, keys), so
that the user can set `style:` and its keys by hand.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import msgspec

RECORD_KEYS = ("data", "products", "items", "results", "records", "rows", "entries")  # preferred, in order
CURSOR_KEYS = ("next_cursor", "nextCursor", "cursor_next", "next_page_token", "nextPageToken")
_NEXT = re.compile(r'<([^>]*)>\s*;[^,]*rel="?next"?', re.IGNORECASE)


class Answer(NamedTuple):
    """One probe's outcome: its query, and the answer or why it failed."""

    query: dict[str, str]
    body: bytes | None  # None: it failed for good
    headers: dict[str, str]
    failure: str = ""  # error kind and detail, when it failed
    status: int | None = None  # the failed answer's status, if one came


class Detected(NamedTuple):
    style: str
    items: str | None  # body key holding the records (None: a bare list)
    total: str | None  # body key holding the total (records, or pages if 'total_pages')
    cursor: str | None  # body key holding the next cursor
    seen: str  # what decided it, for the report

    def describe(self) -> str:
        keys = [f"{name}: {value}" for name, value in
                (("items", self.items), ("total", self.total), ("cursor", self.cursor)) if value]  # fmt: skip
        return f"style {self.style}" + (f" ({', '.join(keys)})" if keys else "") + f", from {self.seen}"


class Refused(Exception):
    """No style fits the answers; the message lists what was seen."""


def first_probe(page_size: int) -> dict[str, str]:
    return {"_page": "1", "_limit": str(page_size)}


def decide(answers: list[Answer], page_size: int) -> Detected | dict[str, str]:
    """The style, or the query of the next probe. Raises Refused."""
    if not answers:
        return first_probe(page_size)
    last = answers[-1]
    asked = _query_text(last.query)
    if last.body is None:
        if len(answers) == 1 and last.status in (400, 422):
            return {}  # the API refuses unknown parameters: ask without any
        # Refused parameters may be paging ones: then the style is for the user to set.
        hint = "; set `style:` by hand" if last.status in (400, 404, 422) else ""
        raise Refused(f"the probe request {asked} failed ({last.failure}){hint}")
    found = _from_headers(last.headers)
    if found is not None:
        return found
    try:
        body = msgspec.json.decode(last.body)
    except msgspec.DecodeError:
        head = last.body[:60].decode("utf-8", "replace")
        raise Refused(f"the answer to {asked} is not JSON (it starts {head!r})") from None
    if isinstance(body, dict):
        return _from_envelope(body, asked)
    if not isinstance(body, list):
        raise Refused(f"the answer to {asked} is a JSON {type(body).__name__}, not records")
    return _from_bare_lists(answers, page_size)


def _from_bare_lists(answers: list[Answer], page_size: int) -> Detected | dict[str, str]:
    """Bare lists without paging headers: offset paging if `offset/limit`
    cuts the list to the page size. An empty answer to paging parameters is
    checked against one without any: an API that takes unknown parameters
    as filters answers `[]` to both probes, and must not pass for an empty
    collection."""
    offset = next((a for a in answers if "offset" in a.query), None)
    if offset is None:
        return {"offset": "0", "limit": str(page_size)}
    records = msgspec.json.decode(offset.body or b"[]")
    asked = ", ".join(_query_text(a.query) for a in answers)
    if len(records) > page_size:
        raise Refused(f"a bare list of {len(records)} records whatever the paging parameters ({asked}),"
                      " and no Link or X-Total-Count header")  # fmt: skip
    if records:
        seen = f"a bare list cut to {len(records)} by {_query_text(offset.query)}"
        return Detected("offset", None, None, None, seen)
    bare = next((a for a in answers if not a.query), None)
    if bare is None:
        return {}
    unpaged = msgspec.json.decode(bare.body or b"[]")
    if isinstance(unpaged, list) and unpaged:
        raise Refused(f"{len(unpaged)} records without paging parameters but none with them ({asked}):"
                      " the API may take them as filters")  # fmt: skip
    return Detected("offset", None, None, None, "an empty list, with and without paging parameters")


def _from_headers(headers: dict[str, str]) -> Detected | None:
    lowered = {k.lower(): v for k, v in headers.items()}
    link = lowered.get("link", "")
    match = _NEXT.search(link)
    if match:
        names = set(parse_qs(urlsplit(match[1]).query))
        if "_page" in names:
            return Detected("link", None, None, None, 'a Link header (rel="next" with _page)')
        if "page" in names:
            return Detected("page", None, None, None, 'a Link header (rel="next" with page)')
        raise Refused(f"a Link header whose next URL pages by {sorted(names)}, not _page or page")
    if "x-total-count" in lowered:
        return Detected("link", None, None, None, "an X-Total-Count header")
    return None


def _from_envelope(body: dict[str, Any], asked: str) -> Detected:
    items = records_key(body)
    keys = ", ".join(list(body)[:20])
    if items is None:
        raise Refused(f"the answer to {asked} is an object with no list of records (keys: {keys})")

    def has(*names: str) -> bool:
        return any(name in body for name in names)

    cursor = next((k for k in CURSOR_KEYS if k in body and isinstance(body[k], str | None)), None)
    if has("total_pages"):
        return Detected("page", items, "total_pages", None, f"total_pages in the body (keys: {keys})")
    if cursor is not None:
        return Detected("cursor", items, None, cursor, f"{cursor} in the body (keys: {keys})")
    if _is_count(body.get("total")):  # the position key names the style; limit/per_page only size it
        for style, name in (("skip_limit", "skip"), ("offset", "offset"), ("page", "page")):
            if has(name):
                return Detected(style, items, "total", None, f"total and {name} in the body (keys: {keys})")
    raise Refused(
        f"the answer to {asked} holds records under '{items}' but no paging keys"
        f" (total_pages, next_cursor, total with skip, offset or page); keys: {keys}"
    )


def records_key(body: dict[str, Any]) -> str | None:
    """The key of the body's list of records (objects): a usual name first,
    else the only such list."""
    lists = [k for k, v in body.items() if isinstance(v, list) and (not v or isinstance(v[0], dict))]
    for name in RECORD_KEYS:
        if name in lists:
            return name
    return lists[0] if len(lists) == 1 else None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _query_text(query: dict[str, str]) -> str:
    return "?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "(no paging parameters)"


class Probe:
    """Stands in for a Pager on a probe request: fetch tells it the answer."""

    decode = None  # fetch checks the body is JSON, builds nothing

    def __init__(self, query: dict[str, str]) -> None:
        import asyncio  # here: flow validate needs none of this module's runtime

        self.query = query
        self.answer: Answer | None = None
        self._done = asyncio.Event()

    def observe(
        self, request: Any, body: bytes | None, headers: dict[str, str] | None, decoded: Any = None
    ) -> None:
        self.settle(Answer(self.query, body, headers or {}, "" if body is not None else "no answer"))

    def failed(self, error: str, detail: str, status: int | None) -> None:
        self.settle(Answer(self.query, None, {}, f"{error}: {detail}", status))

    def settle(self, answer: Answer) -> None:
        if self.answer is None:  # the first outcome stands (fetch's, before an abandon)
            self.answer = answer
            self._done.set()

    async def outcome(self) -> Answer:
        await self._done.wait()
        assert self.answer is not None
        return self.answer
