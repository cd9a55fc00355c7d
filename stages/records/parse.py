"""`parse`: page bodies -> batches of raw records; bad records become dead letters.

A page is decoded once with msgspec into an envelope whose records stay raw
(the JSON text of each, msgspec.Raw): by `fetch`, with its pager's decoder,
when it checks the body (parse takes those records when it reads the same
key), else here. The stage that reads the records (normalize) decodes only
the fields it maps, and one malformed record cannot sink its page. A page
that does not decode at all (truncated JSON, an HTML error page with status
200) is a page error; a record that is not a JSON object is a
dead letter with its source, page, position and the value as served.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from flow import ledger
from flow.registry import Params, stage
from stages.http.paging import PageResponse, page_decoder, page_records
from stages.http.urls import safe_url

from .items import Records, decode_any
from .presets import PRESETS, Style

_first_byte = struct.Struct("B").unpack_from  # (byte,): ~70 ns, half a memoryview's cost
_OBJECT = (ord("{"),)


class ParseParams(Params):
    schema: Style | None = None  # a shipped schema: where the style keeps its records
    # else: the body key holding the records; neither: where the page's pager (paginate) reads them
    items: str | None = None


# No span per page (timed by the duration histogram): splitting a page its
# pager already decoded is cheap in-memory work, like redact or dedupe.
@stage("parse", ParseParams, consumes=PageResponse, produces=Records, spans=False)
async def parse(source: AsyncIterator[PageResponse], params: ParseParams, ctx: Any) -> AsyncIterator[Records]:
    """Decode page bodies into records; dead-letter what is not a record."""
    preset = PRESETS.get(params.schema or "")
    given = params.items is not None or preset is not None
    items_key = params.items if params.items is not None else preset.items if preset else None
    decode_page = page_decoder(items_key)
    async for page in source:
        request = page.request
        if not given:  # neither schema nor items: where the page's own pager reads its records
            items_key = getattr(request.pager, "items_path", None)
            decode_page = _decoder(items_key)
        try:
            raws = page_records(page.decoded, items_key)  # fetch's decoding holds them, or:
            if raws is None:
                raws = page_records(decode_page(page.body), items_key) or []
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as err:
            kind = "html_instead_of_json" if page.body.lstrip()[:1] == b"<" else "invalid_json"
            if isinstance(err, RecursionError):
                kind, err = "json_too_deep", ValueError("nested deeper than the decoder allows")
            await ctx.error(
                kind,
                str(err)[:200],
                endpoint=request.endpoint,
                page=request.page,
                attempts=page.attempts,
                url=safe_url(request.url),
            )
            continue
        records = list(enumerate(raws))
        # msgspec validated the JSON: a record whose text opens with `{` is an object.
        firsts = list(map(_first_byte, raws))
        if firsts.count(_OBJECT) < len(raws):  # rare: some are not objects
            records = []
            for (position, raw), first in zip(enumerate(raws), firsts, strict=True):
                if first == _OBJECT:
                    records.append((position, raw))
                    continue
                value = decode_any(raw)
                reason = f"a record is a JSON {_json_type(value)}"
                await ctx.dead_letter(
                    endpoint=request.endpoint, page=request.page, position=position, reason=reason, raw=value
                )
        ctx.count(ledger.RECEIVED, len(raws), on=request.endpoint)
        yield Records(request.endpoint, request.page, records)


@functools.lru_cache(maxsize=64)
def _decoder(items_key: str | None) -> Any:
    return page_decoder(items_key)


def _json_type(value: Any) -> str:
    names = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


KIND = parse
