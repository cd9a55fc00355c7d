"""`normalize: {map: auto}`: which record fields hold a Product's id, title,
price, category and event time, read from a source's first records.

Each field has names it goes by, in order of preference; a key matches a
name ignoring case, `_` and `-` (`unit_amount` = `unitAmount`). A key at the
top of the record wins over one nested one level down (`meta.updatedAt`,
`metadata.category`); among names, the first that at least half of the
sampled records hold (with a value of the right shape) wins, else the first
that any of them holds. The values' shapes count too: an id is a string or
integer, a title a string, a price a number, a string or an object with an
amount, an event time a string or number.

Prices are in minor units when the key says so (`unit_amount`,
`price_cents`, ..., anything ending in `cents` or `minor`), or when the key
is `amount` and every sampled value is a JSON integer (Stripe's style).

No id, title or price: the mapping is refused, with the keys seen.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, NamedTuple

NAMES: dict[str, tuple[str, ...]] = {
    "id": ("id", "uuid", "sku", "product_id", "item_id", "code", "key"),
    "title": ("title", "name", "product_name", "display_name", "label", "description"),
    "price": ("price", "cost", "unit_amount", "amount", "price_cents", "price_in_cents", "unit_price",
              "sale_price", "current_price", "list_price", "amount_cents"),
    "category": ("category", "categories", "category_name", "department", "section", "genre",
                 "classification"),
    "timestamp": ("updated_at", "updated", "modified_at", "modified", "last_modified", "last_updated",
                  "timestamp", "created_at", "created", "creation_at", "date"),
}  # fmt: skip
REQUIRED = ("id", "title", "price")
SAMPLE = 50  # records read at most


class Inferred(NamedTuple):
    fields: dict[str, str]  # Product field -> dotted path
    cents: bool  # prices in minor units

    def describe(self) -> str:
        paths = ", ".join(f"{field}: {path}" for field, path in self.fields.items())
        return paths + (" (minor units)" if self.cents else "")


class Unmappable(Exception):
    """No path for a required field; the message says which and lists the keys."""


def _norm(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


_WANTED = {field: [_norm(name) for name in names] for field, names in NAMES.items()}
_MINOR = re.compile(r"(cents|minor)$")


def _shape_ok(field: str, value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return False
    if field == "id":
        return isinstance(value, str | int)
    if field == "title":
        return isinstance(value, str)
    if field == "price":
        return isinstance(value, int | float | str) or (
            isinstance(value, dict) and ("amount" in value or "value" in value)
        )
    if field == "timestamp":
        return isinstance(value, str | int | float)
    return isinstance(value, str | dict | list)  # category


def _paths(record: dict[str, Any]) -> Iterable[tuple[str, str, Any]]:
    """(path, normalized last key, value): the top level, then one level down."""
    for key, value in record.items():
        yield key, _norm(key), value
    for key, value in record.items():
        if isinstance(value, dict):
            for inner, nested in value.items():
                yield f"{key}.{inner}", _norm(inner), nested


def infer(records: list[dict[str, Any]]) -> Inferred:
    """The mapping for these records (a source's first ones). Raises Unmappable."""
    sample = [r for r in records[:SAMPLE] if isinstance(r, dict)]
    # (field, wanted name, depth) -> path -> records holding it with a value of the right shape
    held: dict[tuple[str, int, int], dict[str, int]] = {}
    for record in sample:
        for path, name, value in _paths(record):
            depth = path.count(".")
            for field, wanted in _WANTED.items():
                if name in wanted and _shape_ok(field, value):
                    counts = held.setdefault((field, depth, wanted.index(name)), {})
                    counts[path] = counts.get(path, 0) + 1
    fields: dict[str, str] = {}
    taken: set[str] = set()
    for field in NAMES:
        path = _choose(field, held, len(sample), taken)
        if path is not None:
            fields[field] = path
            taken.add(path)
    missing = [f for f in REQUIRED if f not in fields]
    if missing:
        keys = sorted({path for record in sample for path, _, _ in _paths(record)})
        raise Unmappable(
            f"map: auto found no field for {', '.join(missing)} in {len(sample)} records"
            f" (keys: {', '.join(keys[:30])}); set `map:` for them"
        )
    return Inferred(fields, _minor_units(fields["price"], sample))


def _choose(
    field: str, held: dict[tuple[str, int, int], dict[str, int]], n: int, taken: set[str]
) -> str | None:
    """The best path for `field`: top level first, then by name; held by half the sample, else by any."""
    candidates = sorted((depth, rank, path, count) for (f, depth, rank), paths in held.items() if f == field
                        for path, count in paths.items() if path not in taken)  # fmt: skip
    for _depth, _rank, path, count in candidates:
        if count * 2 >= n:
            return path
    return candidates[0][2] if candidates else None


def _minor_units(path: str, sample: list[dict[str, Any]]) -> bool:
    name = _norm(path.rsplit(".", 1)[-1])
    if name == "unitamount" or _MINOR.search(name):
        return True
    if name != "amount":
        return False
    values = [_get(record, path) for record in sample]
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, int) and not isinstance(v, bool) for v in present)


def _get(record: dict[str, Any], path: str) -> Any:
    value: Any = record
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value
