"""dummyjson.com: `GET /products?limit=&skip=` -> `{"products", "total", "skip", "limit"}`.

As upstream: `limit` defaults to the page size, `limit=0` asks for everything
(capped here at the server's max page size), the reply's `limit` is the number
of items actually returned, and past the end `products` is `[]` with `limit: 0`.
Native forms: price a float, category a slug string.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from .._catalogue import ADJECTIVES, BRANDS, CATEGORIES, EXTRAS, SENTENCES, WHEN_STAMPS, Product, created_step
from ._common import Page, Reply, Style, category_of, cleaned, int_param, price_of, title_of

_PRICE = ("float", "int", "usd", "plain", "eur")
_CATEGORY = ("slug", "name", "object", "missing")


# The fast path renders straight to JSON bytes with one %-format: about 3x
# cheaper than building the dict and encoding it, which is what keeps one
# server above 3,000 pages/s. `render` stays the readable definition; a test
# checks that both agree on every kind of record.
_encode = msgspec.json.encode
_TEMPLATE = (
    b'{%b%b"description":%b,"price":%b,%b,"tags":["%b","%b"],'
    b'"sku":"%b-%06d-%03d","images":["%b/1.webp","%b/2.webp"],"thumbnail":"%b/thumbnail.webp",'
    b'"meta":{"createdAt":"%b","updatedAt":"%b","barcode":"%013d"}%b}'
)
# The secondary numbers, pre-encoded as one run of JSON members.
_EXTRAS = tuple(
    _encode(
        {
            "discountPercentage": d,
            "rating": r,
            "stock": s,
            "weight": w,
            "dimensions": {"width": x, "height": y, "depth": z},
            "availabilityStatus": "In Stock" if s else "Out of Stock",
        }
    )[1:-1]
    for d, r, s, w, x, y, z in EXTRAS
)
_SLUGS = tuple(c[0].encode() for c in CATEGORIES)
_SKU = tuple(c[0][:3].upper().encode() for c in CATEGORIES)
_IMAGES = tuple(f"https://cdn.dummyjson.com/product-images/{c[0]}/".encode() for c in CATEGORIES)
_TAGS = tuple(a.lower().encode() for a in ADJECTIVES)
_SENTENCES = tuple(_encode(s) for s in SENTENCES)
_STAMPS = tuple(s.encode() for s in WHEN_STAMPS)
_BRANDS = tuple(b',"brand":' + _encode(b) for b in BRANDS)
_N_TAGS, _N_BRANDS = len(_TAGS), len(_BRANDS)


class DummyJSON(Style):
    name = "dummyjson"
    path = "/products"
    price_forms = _PRICE
    category_forms = _CATEGORY
    native_category = tuple(_encode(c[0]) for c in CATEGORIES)

    def window(self, query: Mapping[str, str], *, default: int, maximum: int, total: int) -> Page:
        limit = int_param(query, "limit", default, error=self.error_body)
        skip = int_param(query, "skip", 0, error=self.error_body)
        return Page(skip, maximum if limit == 0 else min(limit, maximum))

    def render(self, product: Product) -> dict[str, Any]:
        bits, number, slug = product.bits, product.number, product.slug
        discount, rating, stock, weight, width, height, depth = EXTRAS[product.extras_index()]
        image = f"https://cdn.dummyjson.com/product-images/{slug}/{number}"
        fields = {
            "id": self.record_id(product),
            "title": title_of(product),
            "description": product.sentence(),
            "category": category_of(product, _CATEGORY),
            "price": price_of(product, _PRICE),
            "discountPercentage": discount,
            "rating": rating,
            "stock": stock,
            "tags": [slug, ADJECTIVES[(bits >> 24) % len(ADJECTIVES)].lower()],
            "sku": f"{slug[:3].upper()}-{number:06d}-{bits % 1000:03d}",
            "weight": weight,
            "dimensions": {"width": width, "height": height, "depth": depth},
            "availabilityStatus": "In Stock" if stock else "Out of Stock",
            "images": [f"{image}/1.webp", f"{image}/2.webp"],
            "thumbnail": f"{image}/thumbnail.webp",
            "meta": {
                "createdAt": product.created_at(),
                "updatedAt": product.updated_at(),
                "barcode": f"{bits % 10**13:013d}",
            },
        }
        brand = product.brand()  # absent on some items, as upstream
        if brand is not None:
            fields["brand"] = brand
        return cleaned(fields, product)

    def native_price(self, cents: int) -> bytes:
        # "10.50" decodes to the same float as cents / 100, cheaper than repr.
        return b"%d.%02d" % divmod(cents, 100)

    def fast_json(self, number: int, bits: int, category: int, head: bytes, price_json: bytes,
                  category_member: bytes, when: int) -> bytes:  # fmt: skip
        # Pool indexes are inlined bit operations; `Product.sentence_index`
        # and friends are the definitions.
        image = b"%b%d" % (_IMAGES[category], number)
        return _TEMPLATE % (
            head,
            category_member,
            _SENTENCES[(bits >> 3) & 1023],
            price_json,
            _EXTRAS[(bits >> 17) & 1023],
            _SLUGS[category],
            _TAGS[(bits >> 24) % _N_TAGS],
            _SKU[category],
            number,
            bits % 1000,
            image,
            image,
            image,
            _STAMPS[created_step(bits, when)],
            _STAMPS[when],
            bits % 10**13,
            b"" if (bits >> 56) % 5 == 0 else _BRANDS[(bits >> 44) % _N_BRANDS],
        )

    def respond(
        self, page: Page, items: list[dict[str, Any]], *, total: int, base_url: str, query: Mapping[str, str]
    ) -> Reply:
        count = max(0, min(page.limit, total - page.offset))  # items on this page
        body = {"products": items, "total": total, "skip": page.offset, "limit": count}
        return Reply(body, {})
