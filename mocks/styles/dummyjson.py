"""dummyjson.com: `GET /products?limit=&skip=` -> `{"products", "total", "skip", "limit"}`.

As upstream: `limit` defaults to the page size, `limit=0` asks for everything
(capped here at the server's max page size), the reply's `limit` is the number
of items actually returned, and past the end `products` is `[]` with `limit: 0`.
Native forms: price a float, category a slug string.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._catalogue import ADJECTIVES, Product
from ._common import Page, Reply, Style, category_of, cleaned, int_param, price_of, title_of

_PRICE = ("float", "int", "usd", "plain", "eur")
_CATEGORY = ("slug", "name", "object", "missing")


class DummyJSON(Style):
    name = "dummyjson"
    path = "/products"

    def window(self, query: Mapping[str, str], *, default: int, maximum: int, total: int) -> Page:
        limit = int_param(query, "limit", default, error=self.error_body)
        skip = int_param(query, "skip", 0, error=self.error_body)
        return Page(skip, maximum if limit == 0 else min(limit, maximum))

    def render(self, product: Product) -> dict[str, Any]:
        bits, number, slug = product.bits, product.number, product.slug
        image = f"https://cdn.dummyjson.com/product-images/{slug}/{number}"
        stock = (bits >> 20) % 150
        fields = {
            "id": self.record_id(product),
            "title": title_of(product),
            "description": product.sentence(),
            "category": category_of(product, _CATEGORY),
            "price": price_of(product, _PRICE),
            "discountPercentage": (bits % 2000) / 100,
            "rating": 1 + (bits >> 12) % 400 / 100,
            "stock": stock,
            "tags": [slug, ADJECTIVES[(bits >> 24) % len(ADJECTIVES)].lower()],
            "sku": f"{slug[:3].upper()}-{number:06d}-{bits % 1000:03d}",
            "weight": 1 + (bits >> 28) % 9,
            "dimensions": {
                "width": (bits >> 4) % 3000 / 100,
                "height": (bits >> 14) % 3000 / 100,
                "depth": (bits >> 24) % 3000 / 100,
            },
            "availabilityStatus": "In Stock" if stock else "Out of Stock",
            "images": [f"{image}/1.webp", f"{image}/2.webp"],
            "thumbnail": f"{image}/thumbnail.webp",
            "meta": {
                "createdAt": product.timestamp(),
                "updatedAt": product.timestamp(7),
                "barcode": f"{bits % 10**13:013d}",
            },
        }
        brand = product.brand()  # absent on some items, as upstream
        if brand is not None:
            fields["brand"] = brand
        return cleaned(fields, product)

    def respond(
        self, page: Page, items: list[dict[str, Any]], *, total: int, base_url: str, query: Mapping[str, str]
    ) -> Reply:
        body = {"products": items, "total": total, "skip": page.offset, "limit": len(items)}
        return Reply(body, {})
