"""What flow knows of the API styles the mocks imitate (and the real APIs
behind them), in one table: where a page keeps its records, and which
record fields map to the unified product.

    style       records under   id / title / price / category           prices in  event time
    dummyjson   products        id, title, price, category               units      meta.updatedAt
    platzi      (a bare list)   id, title, price, category               units      updatedAt
    reqres      data            id, name, cost, department               units      updated_at
    jsonserver  (a bare list)   id, title, price, categories             units      updatedAt
    cursor      data            id, name, unit_amount, metadata.category cents      updated (Unix s)
"""

from __future__ import annotations

from typing import Literal, NamedTuple


class Preset(NamedTuple):
    items: str | None  # body key holding the records (None: the body is a list)
    fields: dict[str, str]  # Product field -> dotted path in the record
    cents: bool = False  # prices in minor units


PRESETS: dict[str, Preset] = {
    "dummyjson": Preset(
        "products",
        {"id": "id", "title": "title", "price": "price", "category": "category",
         "timestamp": "meta.updatedAt"},
    ),
    "platzi": Preset(
        None,
        {"id": "id", "title": "title", "price": "price", "category": "category", "timestamp": "updatedAt"},
    ),
    "reqres": Preset(
        "data",
        {"id": "id", "title": "name", "price": "cost", "category": "department", "timestamp": "updated_at"},
    ),
    "jsonserver": Preset(
        None,
        {"id": "id", "title": "title", "price": "price", "category": "categories", "timestamp": "updatedAt"},
    ),
    "cursor": Preset(
        "data",
        {"id": "id", "title": "name", "price": "unit_amount", "category": "metadata.category",
         "timestamp": "updated"},
        True,
    ),
}  # fmt: skip
STYLES = tuple(PRESETS)
Style = Literal["dummyjson", "platzi", "reqres", "jsonserver", "cursor"]  # a test holds it equal to PRESETS
