"""The item kinds of the records family: what flows between its stages."""

from __future__ import annotations

from typing import Any

import msgspec

from .product import Product


class Records(msgspec.Struct, frozen=True):
    """A page's worth of decoded records, with where they came from."""

    endpoint: str
    page: int
    records: list[tuple[int, dict[str, Any]]]  # (position on the page, record)


class ProductBatch(msgspec.Struct, frozen=True):
    """A page's worth of unified products."""

    endpoint: str
    page: int
    products: list[Product]


__all__ = ["Product", "ProductBatch", "Records"]
