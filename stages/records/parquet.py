"""`parquet`: products as a Parquet file, a row group per `row_group`
products, written atomically.

The schema comes from the Product record: strings, float64 prices and
quality, `processed_at` as a UTC timestamp (milliseconds), `extra` as JSON
text. Products are gathered column by column up to `row_group` of them
(memory holds one row group: ~20 MB at the default 65,536), then converted
and written on a worker thread while the stage gathers the next. The file
is written under a temporary name and renamed when the input ends, so a
reader never sees half a file; an interrupted run drains into it.

pyarrow is an optional extra (`pip install 'flow[parquet]'`, ~55 MB): a
graph naming `parquet` without it is refused by `flow validate`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from flow.registry import Params, stage

from .items import Product, ProductBatch

COLUMNS = list(Product.__struct_fields__)


class ParquetParams(Params):
    path: str = "products.parquet"  # relative paths are under run.out
    row_group: int = 65_536  # products per row group (memory holds one)
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

    types = {"price": pa.float64(), "quality": pa.float64(), "processed_at": pa.timestamp("ms", tz="UTC")}
    return pa.schema([(name, types.get(name, pa.string())) for name in COLUMNS])


def table(columns: dict[str, list[Any]], schema: Any) -> Any:
    """One row group's columns as an Arrow table of `schema`."""
    import pyarrow as pa

    arrays = []
    for field in schema:
        values = columns[field.name]
        if field.name == "processed_at":
            arrays.append(pa.array(values, pa.string()).cast(field.type))
        elif field.name == "extra":
            encode = msgspec.json.encode
            arrays.append(pa.array([encode(v).decode() for v in values], pa.string()))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


@stage("parquet", ParquetParams, consumes=ProductBatch, produces=None)
async def parquet(source: AsyncIterator[ProductBatch], params: ParquetParams, ctx: Any) -> AsyncIterator[Any]:
    """Write every product to a Parquet file (a row group per `row_group`), atomically."""
    import asyncio
    import tempfile

    import pyarrow.parquet as pq

    final = ctx.output_path(params.path)
    final.parent.mkdir(parents=True, exist_ok=True)
    final.unlink(missing_ok=True)  # no earlier run's file beside this run's report
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    shape = schema()
    compression = None if params.compression == "none" else params.compression
    writer = pq.ParquetWriter(tmp, shape, compression=compression)
    columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    gathered, writing = 0, None
    astuple = msgspec.structs.astuple

    async def flush() -> None:
        nonlocal columns, gathered, writing
        if writing is not None:
            await writing  # one row group being written at a time: memory holds at most two
        group, columns, gathered = columns, {name: [] for name in COLUMNS}, 0
        writing = asyncio.ensure_future(asyncio.to_thread(lambda: writer.write_table(table(group, shape))))

    try:
        async for batch in source:
            lists = [columns[name] for name in COLUMNS]
            for product in batch.products:
                for values, value in zip(lists, astuple(product), strict=True):
                    values.append(value)
            gathered += len(batch.products)
            if gathered >= params.row_group:
                await flush()
            yield batch
        if gathered:
            await flush()
        if writing is not None:
            await writing
        await asyncio.to_thread(writer.close)
        os.replace(tmp, final)
    finally:
        if writing is not None and not writing.done():
            with contextlib.suppress(BaseException):
                await asyncio.shield(writing)
        with contextlib.suppress(Exception):
            writer.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


KIND = parquet
