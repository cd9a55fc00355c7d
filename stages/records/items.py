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

    def records_by_source(self) -> dict[str, int]:
        """What a sink taking this writes, for the ledger (flow.ledger)."""
        return {self.endpoint: len(self.records)}


class ProductBatch(msgspec.Struct, frozen=True):
    """A page's worth of unified products."""

    endpoint: str
    page: int
    products: list[Product]

    def records_by_source(self) -> dict[str, int]:
        """What a sink taking this writes, for the ledger (flow.ledger). After
        dedupe a batch may hold products of several sources."""
        found: dict[str, int] = {}
        for product in self.products:
            found[product.source] = found.get(product.source, 0) + 1
        return found


__all__ = ["Product", "ProductBatch", "Records"]
