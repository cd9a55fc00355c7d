"""`parquet`: products as a Parquet file, a row group per `row_group`
products, written atomically.

The schema comes from the Product record: strings, float64 prices and
quality, `processed_at` as a UTC timestamp (milliseconds), `extra` as JSON
text. Products are gathered up to `row_group` of them, converted to Arrow
arrays on the loop, and encoded into the file on a worker thread while the
stage gathers the next (memory holds about two row groups: ~10 MB at the
default 16,384). The file
is written under a temporary name and renamed when the input ends, so a
reader never sees half a file; an interrupted run drains into it.

pyarrow is an optional extra (`pip install 'flow[parquet]'`, ~55 MB): a
graph naming `parquet` without it is refused by `flow validate`.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from flow.registry import Params, stage

from ._files import written_whole
from .items import Product, ProductBatch
from .product import TIMES

if TYPE_CHECKING:
    from concurrent.futures import Future

COLUMNS = list(Product.__struct_fields__)


class ParquetParams(Params):
    path: str = "products.parquet"  # relative paths are under run.out
    row_group: int = 16_384  # products per row group (memory holds about two)
    compression: str = "zstd"  # snappy, zstd, gzip, brotli, lz4 or none

    def __post_init__(self) -> None:
        if importlib.util.find_spec("pyarrow") is None:
            raise ValueError("parquet needs pyarrow: pip install 'flow[parquet]'")
        if self.row_group < 1:
            raise ValueError("row_group: at least 1")
        if self.compression not in ("snappy", "zstd", "gzip", "brotli", "lz4", "none"):
            raise ValueError("compression: snappy, zstd, gzip, brotli, lz4 or none")


def schema() -> Any:
    import pyarrow as pa

    instant = pa.timestamp("ms", tz="UTC")
    types = {"price": pa.float64(), "quality": pa.float64(), "processed_at": instant, "timestamp": instant}
    return pa.schema([(name, types.get(name, pa.string())) for name in COLUMNS])


def table(rows: list[tuple[Any, ...]], schema: Any) -> Any:
    """One row group's products (as tuples, in COLUMNS order) as an Arrow
    table of `schema`."""
    import pyarrow as pa

    arrays = []
    for field, values in zip(schema, zip(*rows, strict=True), strict=True):  # columns, transposed in C
        if field.name in TIMES:
            arrays.append(_instants(values, field.type, field.name))
        elif field.name == "extra":
            encode = msgspec.json.encode
            arrays.append(pa.array([encode(v).decode() for v in values], pa.string()))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _instants(values: tuple[Any, ...], type_: Any, name: str = "processed_at") -> Any:
    """ISO 8601 times as Arrow timestamps: cast in C when every value is one
    Arrow reads ("...T10:00:00.123Z", offsets, microseconds), else one by one
    (no offset: UTC); a value that is no time at all is an error naming it."""
    import pyarrow as pa

    try:
        return pa.array(values, pa.string()).cast(pa.timestamp("us", tz="UTC")).cast(type_, safe=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pa.array([_instant(value, name) for value in values], type_)


def _instant(value: Any, name: str = "processed_at") -> datetime | None:
    if value is None:  # an event time that was not given
        return None
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {value!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@stage("parquet", ParquetParams, consumes=ProductBatch, produces=None, whole=True)
async def parquet(source: AsyncIterator[ProductBatch], params: ParquetParams, ctx: Any) -> AsyncIterator[Any]:
    """Write every product to a Parquet file (a row group per `row_group`), atomically."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.parquet as pq

    # The writer is not thread-safe: it is used by one worker thread at a
    # time, and closed only once that thread is done with it, also when
    # this stage is cancelled while a row group is being written.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"flow-parquet-{ctx.node}")
    writing: Future[Any] | None = None
    writer = None
    rows: list[tuple[Any, ...]] = []
    astuple = msgspec.structs.astuple

    async def settled() -> None:
        if writing is not None:
            await asyncio.shield(asyncio.wrap_future(writing))

    async def flush() -> None:
        # Arrow arrays are made from Python objects under the GIL: here, on
        # the loop. Encoding and compressing them into the file does not
        # need it: on the worker thread, while the next row group gathers.
        nonlocal rows, writing
        group, rows = table(rows, shape), []
        await settled()  # one row group being written at a time
        writing = pool.submit(writer.write_table, group)

    with written_whole(ctx, params.path) as tmp:
        try:
            shape = schema()
            compression = None if params.compression == "none" else params.compression
            writer = pq.ParquetWriter(str(tmp), shape, compression=compression)
            async for batch in source:
                rows.extend(map(astuple, batch.products))
                if len(rows) >= params.row_group:
                    await flush()
                yield batch
            if rows:
                await flush()
            await settled()
            writing = pool.submit(writer.close)
            await settled()
        finally:
            if writing is not None:
                with contextlib.suppress(BaseException):
                    writing.result()  # a cancelled stage waits here for the thread (one row group at most)
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.close()
            pool.shutdown(wait=True)


KIND = parquet
