"""reqres.in: `GET /api/products?page=&per_page=` -> `{"page", "per_page", "total",
"total_pages", "data", "support"}`.

Needs an `x-api-key` header (401 without it, as upstream since 2025). Pages
count from 1; past the last page `data` is `[]` with the totals intact.
Records name their fields differently: `name`, `cost` as a currency string
(`"$1,299.00"`), `department`, `year`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from .._catalogue import CATEGORIES, Product
from ._common import WHEN_ASCII, Page, Reply, Style, category_of, cleaned, price_of, title_of

_encode = msgspec.json.encode

_PRICE = ("usd", "float", "eur", "plain", "object")
_CATEGORY = ("name", "slug", "object", "missing")
_SUPPORT = {
    "url": "https://contentcaddy.io?utm_source=reqres&utm_medium=json&utm_campaign=referral",
    "text": "Tired of writing endless social media content? Let Content Caddy generate it for you.",
}


_TEMPLATE = b'{%b%b"year":%d,"cost":%b,"color":"#%06X","pantone_value":"%02d-%04d","updated_at":"%b"}'


class Reqres(Style):
    name = "reqres"
    path = "/api/products"
    price_forms = _PRICE
    category_forms = _CATEGORY
    title_key = b'"name":'
    category_key = b'"department":'
    native_category = tuple(_encode(c[1]) for c in CATEGORIES)

    def window(self, query: Mapping[str, str], *, default: int, maximum: int, total: int) -> Page:
        return self.numbered_page(query, "page", "per_page", default=default, maximum=maximum)

    def render(self, product: Product) -> dict[str, Any]:
        bits = product.bits
        fields = {
            "id": self.record_id(product),
            "name": title_of(product),
            "year": 2000 + (bits >> 10) % 26,
            "cost": price_of(product, _PRICE),
            "department": category_of(product, _CATEGORY),
            "color": f"#{bits % 0xFFFFFF:06X}",
            "pantone_value": f"{(bits >> 3) % 20:02d}-{(bits >> 9) % 10000:04d}",
            "updated_at": product.updated_at(),
        }
        return cleaned(fields, product)

    def fast_json(self, number: int, bits: int, category: int, head: bytes, price_json: bytes,
                  category_member: bytes, when: int) -> bytes:  # fmt: skip
        return _TEMPLATE % (
            head,
            category_member,
            2000 + (bits >> 10) % 26,
            price_json,
            bits % 0xFFFFFF,
            (bits >> 3) % 20,
            (bits >> 9) % 10000,
            WHEN_ASCII[when],
        )

    def respond(
        self, page: Page, items: list[dict[str, Any]], *, total: int, base_url: str, query: Mapping[str, str]
    ) -> Reply:
        body = {
            "page": page.number,
            "per_page": page.limit,
            "total": total,
            "total_pages": -(-total // page.limit),
            "data": items,
            "support": _SUPPORT,
        }
        return Reply(body, {})

    def error_body(self, message: str) -> dict[str, Any]:
        return {"error": message}
