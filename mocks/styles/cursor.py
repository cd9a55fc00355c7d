"""A cursor API (Slack/Stripe-like): `GET /items?cursor=&limit=` -> `{"data", "next_cursor"}`.

The next page can only be known from the previous one: `next_cursor` is
opaque (base64 of the position, signed with the seed so that a made-up
cursor gets 400) and `null` on the last page. Records carry string ids
(`prod_0000017`), the price in cents as `unit_amount`, and the category
inside `metadata`.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

import msgspec

from .._catalogue import CATEGORIES, Product, created_step
from ._common import (
    MISSING,
    WHEN_EPOCH,
    BadRequest,
    Page,
    Reply,
    Style,
    category_of,
    cleaned,
    int_param,
    price_of,
    title_of,
)

_encode = msgspec.json.encode
_PRICE = ("cents", "float", "usd", "object")
_CATEGORY = ("slug", "name", "object", "missing")


_TEMPLATE = (
    b'{%b"object":"product","unit_amount":%b,"currency":"usd","active":%b,"metadata":{%b},"created":%d,'
    b'"updated":%d}'
)


class Cursor(Style):
    name = "cursor"
    path = "/items"
    price_forms = _PRICE
    category_forms = _CATEGORY
    id_format = b'"id":"prod_%07d",'
    title_key = b'"name":'
    category_end = b""  # the category is the only member of `metadata`
    native_category = tuple(_encode(c[0]) for c in CATEGORIES)
    id_prefix = "prod_"

    def __init__(self, secret: int = 0) -> None:
        self._secret = str(secret).encode()

    def _sign(self, offset: int) -> str:
        return hashlib.blake2b(b"%d" % offset, key=self._secret, digest_size=4).hexdigest()

    def encode(self, offset: int) -> str:
        raw = f"{offset}.{self._sign(offset)}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def decode(self, cursor: str) -> int:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            offset_text, _, signature = raw.partition(".")
            offset = int(offset_text)
        except ValueError:
            offset, signature = -1, ""
        if offset < 0 or signature != self._sign(offset):
            raise BadRequest(self.error_body(f"invalid cursor {cursor!r}"))
        return offset

    def window(self, query: Mapping[str, str], *, default: int, maximum: int, total: int) -> Page:
        limit = min(int_param(query, "limit", default, low=1, error=self.error_body), maximum)
        cursor = query.get("cursor") or ""
        return Page(self.decode(cursor) if cursor else 0, limit)

    def render(self, product: Product) -> dict[str, Any]:
        category = category_of(product, _CATEGORY)
        fields = {
            "id": self.record_id(product),
            "object": "product",
            "name": title_of(product),
            "unit_amount": price_of(product, _PRICE),
            "currency": "usd",
            "active": product.bits % 17 != 0,
            "metadata": {} if category is MISSING else {"category": category},
            "created": WHEN_EPOCH[product.created_step()],
            "updated": WHEN_EPOCH[product.when],
        }
        return cleaned(fields, product)

    def native_price(self, cents: int) -> bytes:
        return b"%d" % cents

    def fast_json(self, number: int, bits: int, category: int, head: bytes, price_json: bytes,
                  category_member: bytes, when: int) -> bytes:  # fmt: skip
        return _TEMPLATE % (
            head,
            price_json,
            b"true" if bits % 17 != 0 else b"false",
            category_member,
            WHEN_EPOCH[created_step(bits, when)],
            WHEN_EPOCH[when],
        )

    def respond(
        self, page: Page, items: list[dict[str, Any]], *, total: int, base_url: str, query: Mapping[str, str]
    ) -> Reply:
        end = page.offset + page.limit
        return Reply({"data": items, "next_cursor": self.encode(end) if end < total else None}, {})

    def error_body(self, message: str) -> dict[str, Any]:
        return {"ok": False, "error": message}
