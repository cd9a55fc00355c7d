"""json-server 0.17 / jsonplaceholder: `GET /products?_page=&_limit=` -> a bare array.

The total is in `X-Total-Count` and navigation in a `Link` header with
first/prev/next/last (absolute URLs keeping the other query parameters).
Past the end: `[]` and no `Link`. Without `_page` upstream returns the whole
collection (capped here at the max page size); `_limit` defaults to 10
upstream and to the server's page size here. Native forms: price a European
string (`"1.299,00 €"`), categories a list of slugs, fakestore-style rating.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import msgspec

from .._catalogue import CATEGORIES, Product
from ._common import WHEN_ASCII, Page, Reply, Style, category_of, cleaned, int_param, price_of, title_of

_encode = msgspec.json.encode

_PRICE = ("eur", "plain", "float", "usd", "object")
_CATEGORY = ("list", "slug", "name", "object", "missing")


# Constant sub-objects, encoded once and embedded as raw JSON: the native
# category list per category, and a pool of fakestore-style ratings.
_CATEGORY_JSON = tuple(msgspec.Raw(msgspec.json.encode([c[0]])) for c in CATEGORIES)
_RATINGS = tuple(
    msgspec.Raw(msgspec.json.encode({"rate": 1 + k % 400 / 100, "count": (k * 7919) % 500}))
    for k in range(1024)
)


_CATEGORY_BYTES = tuple(bytes(raw) for raw in _CATEGORY_JSON)
_RATING_BYTES = tuple(bytes(raw) for raw in _RATINGS)
_TEMPLATE = (
    b'{%b%b"price":%b,"inStock":%b,"rating":%b,"image":"https://fakestoreapi.com/img/%08x.jpg",'
    b'"updatedAt":"%b"}'
)


class JSONServer(Style):
    name = "jsonserver"
    path = "/products"
    links = True
    price_forms = _PRICE
    category_forms = _CATEGORY
    category_key = b'"categories":'
    native_category = _CATEGORY_BYTES

    def window(self, query: Mapping[str, str], *, default: int, maximum: int, total: int) -> Page:
        if "_page" not in query:
            limit = int_param(query, "_limit", maximum, error=self.error_body)
            return Page(0, min(limit, maximum), 0)
        return self.numbered_page(query, "_page", "_limit", default=default, maximum=maximum)

    def render(self, product: Product) -> dict[str, Any]:
        bits = product.bits
        fields = {
            "id": self.record_id(product),
            "title": title_of(product),
            "price": price_of(product, _PRICE),
            "categories": _CATEGORY_JSON[product.category]
            if not product.category_form
            else category_of(product, _CATEGORY),
            "inStock": (bits >> 20) % 150 != 0,
            "rating": _RATINGS[(bits >> 12) & 1023],
            "image": f"https://fakestoreapi.com/img/{bits % 16**8:08x}.jpg",
            "updatedAt": product.updated_at(),
        }
        return cleaned(fields, product)

    def fast_json(self, number: int, bits: int, category: int, head: bytes, price_json: bytes,
                  category_member: bytes, when: int) -> bytes:  # fmt: skip
        return _TEMPLATE % (
            head,
            category_member,
            price_json,
            b"true" if (bits >> 20) % 150 != 0 else b"false",
            _RATING_BYTES[(bits >> 12) & 1023],
            bits % 16**8,
            WHEN_ASCII[when],
        )

    def respond(
        self, page: Page, items: list[dict[str, Any]], *, total: int, base_url: str, query: Mapping[str, str]
    ) -> Reply:
        headers = {
            "X-Total-Count": str(total),
            "Access-Control-Expose-Headers": "X-Total-Count, Link",
        }
        if page.number and page.offset < total:
            last = max(1, -(-total // page.limit))
            # Other query parameters are kept, after _page and _limit.
            rest = urlencode({k: v for k, v in query.items() if k not in {"_page", "_limit"}})
            link = (
                f'<{base_url}{self.path}?_page=%d&_limit={page.limit}{"&" + rest if rest else ""}>; rel="%s"'
            )
            links = [link % (1, "first")]
            if page.number > 1:
                links.append(link % (page.number - 1, "prev"))
            if page.number < last:
                links.append(link % (page.number + 1, "next"))
            links.append(link % (last, "last"))
            headers["Link"] = ", ".join(links)
        return Reply(items, headers)
