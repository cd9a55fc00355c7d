"""The item kinds of the records family: what flows between its stages."""

from __future__ import annotations

import operator
from collections import Counter
from typing import Any

import msgspec

from .product import Product

SOURCE = operator.attrgetter("source")  # a product's source
decode_any = msgspec.json.Decoder().decode  # any JSON value, e.g. a record whole
_encode = msgspec.json.Encoder().encode


class Records(msgspec.Struct, frozen=True):
    """A page's worth of records, with where they came from. Each record is
    kept as the JSON text of an object, as served (msgspec.Raw, a view of the
    page body): the stage that reads them decodes only what it needs, and a
    dead letter can carry the record as it came."""

    endpoint: str
    page: int
    raws: list[tuple[int, msgspec.Raw]]  # (position on the page, the record's JSON text)

    @classmethod
    def of(cls, endpoint: str, page: int, records: list[tuple[int, dict[str, Any]]]) -> Records:
        """Records from decoded ones (tests, stages that make records)."""
        return cls(endpoint, page, [(position, msgspec.Raw(_encode(r))) for position, r in records])

    def decoded(self) -> list[tuple[int, dict[str, Any]]]:
        """Every record decoded whole into a dict, on each call."""
        return [(position, decode_any(raw)) for position, raw in self.raws]

    def records_by_source(self) -> dict[str, int]:
        """What a sink taking this writes, for the ledger (flow.ledger)."""
        return {self.endpoint: len(self.raws)}


class ProductBatch(msgspec.Struct, frozen=True):
    """A page's worth of unified products."""

    endpoint: str
    page: int
    products: list[Product]

    def records(self) -> list[Product]:
        """The records it holds (flow.expect reads them: `flow test`)."""
        return self.products

    def records_by_source(self) -> dict[str, int]:
        """What a sink taking this writes, for the ledger (flow.ledger). After
        dedupe a batch may hold products of several sources; most hold one,
        found by a plain loop (1.4 µs for 100 products, a Counter 6.7: this
        runs twice per batch, at its source and at each record sink)."""
        products = self.products
        if not products:
            return {}
        first = products[0].source
        for product in products:
            if product.source != first:
                return Counter(map(SOURCE, products))
        return {first: len(products)}


class ProductTally(msgspec.Struct, frozen=True):
    """What a report needs of a product batch: products per category and per
    source. It crosses from a shard to the driver in a batch's place
    (`report`'s digest, flow.relay); it holds no records, so no ledger counts
    it (the shard's relay counted the batch's records)."""

    categories: dict[str, int]
    sources: dict[str, int]

    @classmethod
    def of(cls, batch: ProductBatch) -> ProductTally:
        products = batch.products
        return cls(dict(Counter(p.category for p in products)), dict(Counter(map(SOURCE, products))))


__all__ = ["Product", "ProductBatch", "ProductTally", "Records"]
