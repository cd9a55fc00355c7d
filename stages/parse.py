"""`parse`: page bodies -> batches of raw records; bad records become dead letters.

A page decodes once with msgspec into an envelope whose records stay raw, so
one malformed record cannot sink its page: each record then decodes on its
own. A page that does not decode at all (truncated JSON, an HTML error page
with status 200) is a page error; a record that is not a JSON object is a
dead letter with its source, page, position and a snippet.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

from flow.paging import PageResponse
from flow.registry import Params, stage

SCHEMAS = {"dummyjson": "products", "platzi": None, "reqres": "data", "jsonserver": None, "cursor": "data"}


class ParseParams(Params):
    schema: str | None = None  # a shipped schema: dummyjson, platzi, reqres, jsonserver, cursor
    items: str | None = None  # else: the body key holding the records (None: the body is a list)

    def __post_init__(self) -> None:
        if self.schema is not None and self.schema not in SCHEMAS:
            raise ValueError(f"schema: unknown schema {self.schema!r}; shipped: {', '.join(SCHEMAS)}")


class Records(msgspec.Struct, frozen=True):
    """A page's worth of decoded records, with where they came from."""

    endpoint: str
    page: int
    records: list[tuple[int, dict[str, Any]]]  # (position on the page, record)


def _decoder(items: str | None) -> Any:
    if items is None:
        return msgspec.json.Decoder(list[msgspec.Raw]).decode
    envelope = msgspec.defstruct("Envelope", [(items, list[msgspec.Raw], [])])
    decode = msgspec.json.Decoder(envelope).decode
    return lambda body: getattr(decode(body), items)


@stage("parse", ParseParams, consumes="pages", produces="records")
async def parse(source: AsyncIterator[PageResponse], params: ParseParams, ctx: Any) -> AsyncIterator[Records]:
    """Decode page bodies into records; dead-letter what is not a record."""
    items_key = params.items if params.items is not None else SCHEMAS.get(params.schema or "")
    decode_page = _decoder(items_key)
    decode_record = msgspec.json.Decoder().decode
    async for page in source:
        request = page.request
        try:
            raws = decode_page(page.body)
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            kind = "html_instead_of_json" if page.body.lstrip()[:1] == b"<" else "invalid_json"
            ctx.record_error(
                kind,
                str(err)[:200],
                endpoint=request.endpoint,
                page=request.page,
                attempts=page.attempts,
                url=request.url,
            )
            continue
        records = []
        for position, raw in enumerate(raws):
            try:
                record = decode_record(raw)
            except msgspec.DecodeError as err:  # pragma: no cover - raw came from valid JSON
                record, reason = None, str(err)
            else:
                reason = "" if isinstance(record, dict) else f"a record is a JSON {type(record).__name__}"
            if reason:
                ctx.dead_letter(
                    endpoint=request.endpoint,
                    page=request.page,
                    position=position,
                    reason=reason,
                    raw=bytes(raw)[:200].decode("utf-8", "replace"),
                )
                continue
            records.append((position, record))
        ctx.count("records", len(raws))
        yield Records(request.endpoint, request.page, records)


KIND = parse
