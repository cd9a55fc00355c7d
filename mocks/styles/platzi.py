"""Platzi Fake Store (api.escuelajs.co): `GET /api/v1/products?offset=&limit=` -> a bare array.

No total anywhere: a client learns the end from a short or empty page.
Without `limit` upstream returns the whole collection; here that is capped at
the server's max page size. Native forms: price an integer, category an
object `{id, name, slug, image}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from .._catalogue import CATEGORIES, Product, created_step
from ._common import (
    SENTENCES_JSON,
    SLUGS_ASCII,
    WHEN_ASCII,
    Page,
    Reply,
    Style,
    category_value,
    cleaned,
    int_param,
    price_of,
    title_of,
)

_encode = msgspec.json.encode

_PRICE = ("int", "float", "usd", "plain")
_CATEGORY = ("object", "slug", "name", "missing")
_STAMP = "2025-01-15T08:00:00.000Z"


# The native category object is the same for every product of a category:
# encoded once, embedded as raw JSON.
_CATEGORY_JSON = tuple(
    msgspec.Raw(
        msgspec.json.encode(
            {
                "id": i + 1,
                "name": name,
                "slug": slug,
                "image": f"https://i.imgur.com/cat{i + 1}.jpeg",
                "creationAt": _STAMP,
                "updatedAt": _STAMP,
            }
        )
    )
    for i, (slug, name, *_) in enumerate(CATEGORIES)
)


_CATEGORY_BYTES = tuple(bytes(raw) for raw in _CATEGORY_JSON)
_TEMPLATE = (
    b'{%b%b"slug":"%b-%d","price":%b,"description":%b,'
    b'"images":["https://i.imgur.com/%07x.jpeg"],"creationAt":"%b","updatedAt":"%b"}'
)


class Platzi(Style):
    name = "platzi"
    path = "/api/v1/products"
    price_forms = _PRICE
    category_forms = _CATEGORY
    native_category = _CATEGORY_BYTES

    def window(self, query: Mapping[str, str], *, default: int, maximum: int, total: int) -> Page:
        offset = int_param(query, "offset", 0, error=self.error_body)
        limit = int_param(query, "limit", maximum, error=self.error_body)
        return Page(offset, min(limit, maximum))

    def render(self, product: Product) -> dict[str, Any]:
        form = product.category_form
        if form == 0:
            category = self._category(product)
        else:
            category = category_value(product, _CATEGORY[1 + (form - 1) % (len(_CATEGORY) - 1)])
        fields = {
            "id": self.record_id(product),
            "title": title_of(product),
            "slug": f"{product.slug}-{product.number}",
            "price": price_of(product, _PRICE),
            "description": product.sentence(),
            "category": category,
            "images": [f"https://i.imgur.com/{product.bits % 16**7:07x}.jpeg"],
            "creationAt": product.created_at(),
            "updatedAt": product.updated_at(),
        }
        return cleaned(fields, product)

    def native_price(self, cents: int) -> bytes:
        return b"%d" % round(cents / 100)

    def fast_json(self, number: int, bits: int, category: int, head: bytes, price_json: bytes,
                  category_member: bytes, when: int) -> bytes:  # fmt: skip
        return _TEMPLATE % (
            head,
            category_member,
            SLUGS_ASCII[category],
            number,
            price_json,
            SENTENCES_JSON[(bits >> 3) & 1023],
            bits % 16**7,
            WHEN_ASCII[created_step(bits, when)],
            WHEN_ASCII[when],
        )

    @staticmethod
    def _category(product: Product) -> msgspec.Raw:
        return _CATEGORY_JSON[product.category]

    def respond(
        self, page: Page, items: list[dict[str, Any]], *, total: int, base_url: str, query: Mapping[str, str]
    ) -> Reply:
        return Reply(items, {})
