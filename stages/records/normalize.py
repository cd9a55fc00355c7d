"""`normalize`: raw records -> unified Product records.

The mapping is declared in YAML: each Product field names a dotted path in
the raw record (`category: metadata.category`); shipped presets cover the
mock styles (`preset: cursor`). Converters fixed per field: ids become
`<source>:<id>`, titles are trimmed, prices parsed (`price_in_cents` for
APIs that send cents), categories flattened to a slug ("uncategorized" when
missing). A record that cannot be normalised is a dead letter with its
reason; the rest of the batch carries on.

The work runs per batch on the event loop by default (~0.5 ms for a page of
100 records). Pure Python holds the GIL, so a thread pool adds no speed; it
only keeps the loop responsive, and its hand-off and GIL contention cost a
quarter of flow's throughput (bench/throughput.py). `workers: N` runs each
batch on a pool of N threads, for a mapping slow enough to hold the loop up.
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import operator
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

import msgspec

from flow.items import utc_now
from flow.registry import ConcurrentParams, stage

from .items import ProductBatch, Records
from .presets import PRESETS, Style
from .product import Invalid, Product, clean_title, flatten_category, parse_price, source_id

MAPPED = ("id", "title", "price", "category")  # the Product fields taken from a record by path


class NormalizeParams(ConcurrentParams):
    preset: Style | None = None  # a shipped mapping of the style's fields
    map: dict[str, str] = {}  # Product field -> dotted path in the record; overrides the preset
    extra: dict[str, str] = {}  # extra output field -> dotted path, kept as is (e.g. {brand: brand})
    price_in_cents: bool | None = None  # integer prices are cents (default: true for the cursor preset)
    currency: str = "USD"  # when the price names none
    workers: Annotated[int, msgspec.Meta(ge=0, le=64)] = 0  # threads; 0: on the event loop
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2

    def __post_init__(self) -> None:
        for key in self.map:
            if key not in MAPPED:
                close = difflib.get_close_matches(key, MAPPED, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"mapped fields: {', '.join(MAPPED)}"
                raise ValueError(f"map: '{key}' is not a mapped field; {hint} (other fields: `extra:`)")
        fields = {**self.preset_fields, **self.map}
        missing = {"id", "title", "price"} - set(fields)
        if missing:
            raise ValueError(f"map: no path for {', '.join(sorted(missing))}; set a preset or map them")

    @property
    def preset_fields(self) -> dict[str, str]:
        return PRESETS[self.preset].fields if self.preset is not None else {}


def _get(record: dict[str, Any], path: str) -> Any:
    return _getter(path)(record)


@functools.lru_cache(maxsize=1024)
def _getter(path: str) -> Callable[[dict[str, Any]], Any]:
    """The value at a dotted path of a record (None where a step is missing
    or not an object), compiled once per path: a plain key is one dict.get."""
    if "." not in path:
        return operator.methodcaller("get", path)
    keys = tuple(path.split("."))

    def get(record: dict[str, Any]) -> Any:
        value: Any = record
        for key in keys:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value

    return get


def normalize_batch(
    batch: Records,
    fields: dict[str, str],
    cents: bool,
    currency: str,
    source: str,
    extra: dict[str, str] | None = None,
) -> tuple[list[Product], list[dict[str, Any]]]:
    """Pure and synchronous (on the loop, or in a worker thread). Never raises for a bad
    record: (products, dead letters)."""
    now = utc_now()
    products, dead = [], []
    get_id, get_price, get_title = (_getter(fields[k]) for k in ("id", "price", "title"))
    get_category = _getter(fields["category"]) if "category" in fields else None
    for position, record in batch.records:
        try:
            sid = source_id(get_id(record))
            amount, found_currency = parse_price(get_price(record), cents=cents)
            category = flatten_category(get_category(record)) if get_category else "uncategorized"
            products.append(
                Product(
                    id=f"{source}:{sid}",
                    source_id=sid,
                    title=clean_title(get_title(record)),
                    source=source,
                    price=amount,
                    currency=found_currency or currency,
                    category=category,
                    processed_at=now,
                    extra={
                        k: v for k, path in (extra or {}).items() if (v := _get(record, path)) is not None
                    },
                )
            )
        except Invalid as why:
            dead.append(
                {
                    "endpoint": batch.endpoint,
                    "page": batch.page,
                    "position": position,
                    "id": record.get("id") if isinstance(record.get("id"), int | str) else None,
                    "reason": str(why),
                    "raw": record,
                }
            )
        except Exception as exc:  # a converter bug must not lose the record silently either
            dead.append(
                {
                    "endpoint": batch.endpoint,
                    "page": batch.page,
                    "position": position,
                    "reason": f"internal: {type(exc).__name__}: {exc}",
                    "raw": record,
                }
            )
    return products, dead


def _shutdown(pool: ThreadPoolExecutor) -> None:
    pool.shutdown(wait=False, cancel_futures=True)


@stage("normalize", NormalizeParams, consumes=Records, produces=ProductBatch, per_item=True)
async def normalize(batch: Records, params: NormalizeParams, ctx: Any) -> ProductBatch:
    """Map raw records to Products (on the loop, or `workers` threads); bad ones to dead letters."""
    fields = {**params.preset_fields, **params.map}
    cents = params.price_in_cents if params.price_in_cents is not None else bool(
        params.preset and PRESETS[params.preset].cents
    )
    source = batch.endpoint  # the source node: the ledger's key too
    if params.workers:
        pool = ctx.resource(
            ("normalize", ctx.node, ctx.index),
            lambda: ThreadPoolExecutor(params.workers, f"normalize-{ctx.node}"),
            _shutdown,
        )
        products, dead = await asyncio.get_running_loop().run_in_executor(
            pool, normalize_batch, batch, fields, cents, params.currency, source, params.extra
        )
    else:
        products, dead = normalize_batch(batch, fields, cents, params.currency, source, params.extra)
    for letter in dead:
        await ctx.dead_letter(**letter)
    ctx.count("products", len(products), on=batch.endpoint)
    return ProductBatch(batch.endpoint, batch.page, products)


KIND = normalize
