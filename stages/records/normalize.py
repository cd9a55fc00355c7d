"""`normalize`: raw records -> unified Product records.

The mapping is declared in YAML: each Product field names a dotted path in
the raw record (`category: metadata.category`); shipped presets cover the
mock styles (`preset: cursor`). Converters fixed per field: ids become
`<source>:<id>`, titles are trimmed, prices parsed (`price_in_cents` for
APIs that send cents), categories flattened to a slug ("uncategorized" when
missing). A record that cannot be normalised is a dead letter with its
reason; the rest of the batch carries on.

The work runs per batch on the event loop by default (~0.4 ms for a page of
100 records). Pure Python holds the GIL, so a thread pool adds no speed; it
only keeps the loop responsive, and its hand-off and GIL contention cost a
quarter of flow's throughput (bench/throughput.py). `workers: N` runs each
batch on a pool of N threads, for a mapping slow enough to hold the loop up;
`workers: {processes: N}` on N worker processes, beside the event loop: it
pays where the machine has a core to spare and the mapping costs more than
sending a batch there and back (bench/throughput.py measures both). A pool
has at most `concurrency` batches in flight, by default as many as it has
workers; on the loop, batches go one at a time, without a task each.

`flow replay` passes stored dead letters of this stage through it again (a
batch per page, each record at its position), typically after the map was
fixed.
"""

from __future__ import annotations

import difflib
import functools
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple

import msgspec

from flow.items import DeadLetter, utc_now
from flow.registry import ConcurrentParams, Params, stage

from .infer import SAMPLE, Inferred, Unmappable, infer
from .items import ProductBatch, Records, decode_any
from .presets import PRESETS, Style
from .product import Invalid, Product, clean_title, event_time, flatten_category, parse_price, source_id

if TYPE_CHECKING:
    from concurrent.futures import Executor

MAPPED = ("id", "title", "price", "category", "timestamp")  # the Product fields taken from a record by path


class Processes(Params):
    """`{processes: N}` worker processes, or `{ray: N}` actors of the cluster (flow run --cluster)."""

    processes: Annotated[int, msgspec.Meta(ge=1, le=64)] | None = None  # worker processes
    ray: Annotated[int, msgspec.Meta(ge=1, le=256)] | None = None  # Ray actors

    def __post_init__(self) -> None:
        if (self.processes is None) == (self.ray is None):
            raise ValueError("workers: give processes: N or ray: N")

    @property
    def count(self) -> int:
        return self.processes or self.ray or 1


class NormalizeParams(ConcurrentParams):
    preset: Style | None = None  # a shipped mapping of the style's fields
    # Product field -> dotted path in the record, overriding the preset; or `auto`: inferred
    # from each source's first records (stages.records.infer), said on stderr and in run.json
    map: dict[str, str] | Literal["auto"] = {}
    extra: dict[str, str] = {}  # extra output field -> dotted path, kept as is (e.g. {brand: brand})
    price_in_cents: bool | None = None  # integer prices are cents (default: true for the cursor preset)
    currency: str = "USD"  # when the price names none
    # N threads, {processes: N}, or {ray: N} actors of the cluster (flow run --cluster); 0: none
    workers: Annotated[int, msgspec.Meta(ge=0, le=64)] | Processes = 0
    concurrency: Annotated[int, msgspec.Meta(ge=0, le=64)] = 0  # 0: 1 on the loop, the pool size with workers

    @property
    def in_flight(self) -> int:
        workers = self.workers
        return self.concurrency or max(1, workers.count if isinstance(workers, Processes) else workers)

    def __post_init__(self) -> None:
        if self.map == "auto":
            if self.preset is not None:
                raise ValueError("map: auto infers what a preset names: set one of them")
            return
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

    @property
    def fields(self) -> dict[str, str]:
        """The mapping declared (empty for `map: auto`)."""
        return {**self.preset_fields, **self.map} if isinstance(self.map, dict) else {}


class _Mapping(NamedTuple):
    """A mapping compiled once: a decoder of just the record keys its paths
    start with (a msgspec Struct; the other keys are skipped, not built) and
    a getter per field on the decoded struct."""

    decode: Callable[[msgspec.Raw], Any]
    get: dict[str, Callable[[Any], Any]]  # Product field or extra field -> getter


@functools.lru_cache(maxsize=256)
def _compile(paths: tuple[tuple[str, str], ...]) -> _Mapping:
    """`paths`: (field, dotted path) pairs. A missing key or a JSON null is
    None; a nested step that is missing or not an object is None."""
    tops = list(dict.fromkeys(path.split(".", 1)[0] for _, path in paths))
    attrs = {top: f"k{i}" for i, top in enumerate(tops)}
    struct = msgspec.defstruct(
        "Mapped", [(attrs[top], Any, msgspec.field(default=None, name=top)) for top in tops]
    )
    get = {}
    for field, path in paths:
        top, _, rest = path.partition(".")
        attr = operator.attrgetter(attrs[top])
        get[field] = attr if not rest else _walk(attr, tuple(rest.split(".")))
    return _Mapping(msgspec.json.Decoder(struct).decode, get)


def _walk(top: Callable[[Any], Any], keys: tuple[str, ...]) -> Callable[[Any], Any]:
    def get(record: Any) -> Any:
        value = top(record)
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
    """Pure and synchronous (on the loop, a worker thread or a worker process).
    Never raises for a bad record: (products, dead letters)."""
    now = utc_now()
    products, dead = [], []
    extra = extra or {}
    mapping = _compile((*fields.items(), *((f"extra.{k}", path) for k, path in extra.items())))
    decode, get = mapping.decode, mapping.get
    get_id, get_price, get_title = get["id"], get["price"], get["title"]
    get_category, get_time = get.get("category"), get.get("timestamp")
    get_extra = [(k, get[f"extra.{k}"]) for k in extra]
    for position, raw in batch.raws:
        try:
            record = decode(raw)
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
                    timestamp=event_time(get_time(record)) if get_time else None,
                    extra={k: v for k, getter in get_extra if (v := getter(record)) is not None}
                    if get_extra
                    else {},  # no comprehension to run per record when nothing extra is mapped
                )
            )
        except Exception as exc:  # a bad record, or a converter bug: a dead letter, never lost
            dead.append(_dead_letter(batch, position, raw, exc, now))
    return products, dead


def _dead_letter(batch: Records, position: int, raw: msgspec.Raw, exc: Exception, now: str) -> dict[str, Any]:
    """The record whole, as served, with why it was not normalised: Invalid
    says what is wrong with it; anything else is named as a converter bug
    (still a dead letter, not a loss). Its timestamp is the batch's, as its
    products' processed_at."""
    try:
        record = decode_any(raw)
    except (msgspec.DecodeError, RecursionError):
        record = bytes(raw).decode("utf-8", "replace")
    if isinstance(exc, Invalid):
        reason = str(exc)
    elif isinstance(exc, msgspec.ValidationError):  # not a JSON object (Records made by another stage)
        reason = f"a record is not a JSON object: {exc}"
    else:
        reason = f"internal: {type(exc).__name__}: {exc}"
    rid = record.get("id") if isinstance(record, dict) else None
    return {
        "endpoint": batch.endpoint,
        "page": batch.page,
        "position": position,
        "id": rid if isinstance(rid, int | str) else None,
        "reason": reason,
        "raw": record,
        "timestamp": now,
    }


def _pool(workers: int | Processes, node: str) -> Executor:
    """Threads keep the loop responsive (the GIL still runs one at a time);
    processes run the mapping beside the loop, each batch sent there as one
    JSON array and its products back as JSON. Worker processes come from a
    fork server (forking a process that runs threads is unsafe) and ignore
    SIGINT: the run stops them."""
    if isinstance(workers, Processes):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("forkserver")
        return ProcessPoolExecutor(workers.processes, mp_context=context, initializer=_ignore_sigint)
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(workers, f"normalize-{node}")


# To and from a worker process: a batch's records as one JSON array with
# their positions, its products as JSON (a fifth of pickle's cost for 100
# of them, which is about the mapping's own; msgpack would fail on an
# integer beyond 64 bits in `extra`); dead letters, few, pickled.
_PRODUCTS = msgspec.json.Decoder(list[Product])
_decode_raws = msgspec.json.Decoder(list[msgspec.Raw]).decode


def _pack(batch: Records) -> tuple[str, int, list[int], bytes]:
    positions = [position for position, _ in batch.raws]
    return batch.endpoint, batch.page, positions, b"[" + b",".join(raw for _, raw in batch.raws) + b"]"


def _in_process(packed: tuple[str, int, list[int], bytes], *args: Any) -> tuple[bytes, list[dict[str, Any]]]:
    endpoint, page, positions, records = packed
    batch = Records(endpoint, page, list(zip(positions, _decode_raws(records), strict=True)))
    products, dead = normalize_batch(batch, *args)
    return msgspec.json.encode(products), dead


class _Normalizer:
    """A Ray actor's body: batches in, products out (as a worker process does)."""

    def normalize(self, packed: tuple[str, int, list[int], bytes], *args: Any) -> tuple[bytes, list[Any]]:
        return _in_process(packed, *args)


class _Actors:
    """`workers: {ray: N}`: N actors of the cluster the shard runs on, taken in turn."""

    def __init__(self, workers: Processes, ctx: Any) -> None:
        if not ctx.cluster:
            raise RuntimeError("workers: {ray: N} runs on a cluster: flow run --cluster")
        import ray

        actor = ray.remote(num_cpus=0)(_Normalizer)
        self.actors = [actor.remote() for _ in range(workers.count)]
        self.turn = 0

    async def call(self, *args: Any) -> Any:
        self.turn = (self.turn + 1) % len(self.actors)
        return await self.actors[self.turn].normalize.remote(*args)


def _actors(workers: Processes, ctx: Any) -> _Actors:
    return _Actors(workers, ctx)


def _ignore_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _shutdown(pool: Executor) -> None:
    pool.shutdown(wait=False, cancel_futures=True)


def _replayed(letters: list[DeadLetter]) -> list[Records]:
    """`flow replay`: the dead letters' records as served, a batch per page
    (at their positions on it), to be normalized again."""
    pages: dict[tuple[str, int], list[tuple[int, Any]]] = {}
    for letter in letters:
        pages.setdefault((letter.endpoint, letter.page or 0), []).append((letter.position or 0, letter.raw))
    return [Records.of(endpoint, page, sorted(raws, key=_first)) for (endpoint, page), raws in pages.items()]


def _first(pair: tuple[int, Any]) -> int:
    return pair[0]


@stage(
    "normalize", NormalizeParams, consumes=Records, produces=ProductBatch, per_item=True, replay=_replayed
)
async def normalize(batch: Records, params: NormalizeParams, ctx: Any) -> ProductBatch:
    """Map raw records to Products (on the loop, or on `workers`); bad ones to dead letters."""
    source = batch.endpoint  # the source node: the ledger's key too
    fields, cents = params.fields, bool(params.preset and PRESETS[params.preset].cents)
    if params.map == "auto":
        inferred = _inferred(batch, ctx)
        if inferred is None:  # nothing to read a mapping from yet
            return ProductBatch(batch.endpoint, batch.page, [])
        if isinstance(inferred, str):
            return await _unmappable(batch, inferred, ctx)
        fields, cents = inferred
    if params.price_in_cents is not None:
        cents = params.price_in_cents
    if isinstance(params.workers, Processes) and params.workers.ray:
        pool = ctx.resource(("normalize.ray", ctx.node, ctx.index), lambda: _actors(params.workers, ctx))
        args = (fields, cents, params.currency, source, params.extra)
        packed, dead = await pool.call(_pack(batch), *args)
        products = _PRODUCTS.decode(packed)
    elif params.workers:
        import asyncio  # here: the pool is opt-in, and flow validate needs only the params

        key = ("normalize", ctx.node, ctx.index)
        pool = ctx.resource(key, lambda: _pool(params.workers, ctx.node), _shutdown)
        run = asyncio.get_running_loop().run_in_executor
        args = (fields, cents, params.currency, source, params.extra)
        if isinstance(params.workers, Processes):
            packed, dead = await run(pool, _in_process, _pack(batch), *args)
            products = _PRODUCTS.decode(packed)
        else:
            products, dead = await run(pool, normalize_batch, batch, *args)
    else:
        products, dead = normalize_batch(batch, fields, cents, params.currency, source, params.extra)
    for letter in dead:
        await ctx.dead_letter(**letter)
    if params.map == "auto" and len(dead) * 2 > len(batch.raws) >= 4:
        await _doubtful(batch, len(dead), ctx)
    ctx.count("products", len(products), on=batch.endpoint)
    return ProductBatch(batch.endpoint, batch.page, products)


async def _doubtful(batch: Records, dead: int, ctx: Any) -> None:
    """`map: auto`: a batch the inferred mapping rejects most of is a sign it
    was read from unrepresentative first records: an error (once per source,
    so the run fails loudly), the records already dead letters with why."""
    told: set[str] = ctx.resource(("normalize.doubtful", ctx.node, ctx.index), set)
    if batch.endpoint in told:
        return
    told.add(batch.endpoint)
    mapping = ctx.resource(("normalize.auto", ctx.node, ctx.index), dict)[batch.endpoint]
    why = (f"map: auto ({mapping.describe()}, read from the source's first records) rejected {dead} of "
           f"{len(batch.raws)} records of page {batch.page}; check them and set `map:`")  # fmt: skip
    await ctx.error("mapping_doubtful", why, endpoint=batch.endpoint, page=batch.page)


def _inferred(batch: Records, ctx: Any) -> Inferred | str | None:
    """`map: auto`: the mapping of the batch's source, inferred from its first
    batch that holds records and kept for the rest (said once); a string:
    why none fits. Synchronous from lookup to store: batches running at
    once cannot infer twice."""
    known: dict[str, Inferred | str] = ctx.resource(("normalize.auto", ctx.node, ctx.index), dict)
    found = known.get(batch.endpoint)
    if found is None and batch.raws:
        try:
            found = infer([decode_any(raw) for _, raw in batch.raws[:SAMPLE]])
            ctx.say("mapping_inferred", f"normalize: map: auto -> {found.describe()}", source=batch.endpoint,
                    map=found.fields, price_in_cents=found.cents)  # fmt: skip
        except Unmappable as refused:
            found = str(refused)
        known[batch.endpoint] = found
    return found


async def _unmappable(batch: Records, why: str, ctx: Any) -> ProductBatch:
    """No mapping fits the source's records: every one is a dead letter
    saying why (`flow replay` maps them once `map:` is set); an error once."""
    known: set[str] = ctx.resource(("normalize.refused", ctx.node, ctx.index), set)
    if batch.endpoint not in known:
        known.add(batch.endpoint)
        await ctx.error("mapping_unknown", why, endpoint=batch.endpoint, page=batch.page)
    now = utc_now()
    for position, raw in batch.raws:
        await ctx.dead_letter(**_dead_letter(batch, position, raw, Invalid(why), now))
    return ProductBatch(batch.endpoint, batch.page, [])


KIND = normalize
