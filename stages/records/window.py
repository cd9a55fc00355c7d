"""`window`: windowed metrics over the products passing through.

Products pass on unchanged; each closed window (see .windows) goes out on
the node's `windows` side output (`from: NODE.windows`: the `summary_json`
sink reports them as `metrics.windows` and `metrics.price_trends`), and to a
JSON-lines file when `path` is set.
Concurrency: the window state belongs to this stage's generator, which runs
in its node's single task, so nothing else touches it and no lock is needed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec

from flow.registry import Params, stage
from flow.units import Duration

from .items import ProductBatch
from .windows import Windows, WindowStats


class WindowParams(Params):
    every: Duration | None = Duration.default(1)  # window length in processing time...
    count: Annotated[int, msgspec.Meta(ge=1)] | None = None  # ...or in products (then `every` is ignored)
    slide: Duration | None = None  # sliding windows: the step, in seconds or products (default: tumbling)
    path: str | None = None  # also write each closed window as a JSON line

    def __post_init__(self) -> None:
        if self.count is None and not self.every:
            raise ValueError("every: set a window length ('1s') or a count")


@stage(
    "window",
    WindowParams,
    consumes=ProductBatch,
    produces=ProductBatch,
    spans=False,
    outputs={"windows": WindowStats},
)
async def window(source: AsyncIterator[Any], params: WindowParams, ctx: Any) -> AsyncIterator[Any]:
    """Tumbling or sliding windows by time or count; price stats, category
    distribution, per-source throughput and the price trend per window."""
    import asyncio  # here: flow validate needs only the params

    from flow.tracing import provenance  # (OpenTelemetry) likewise

    loop = asyncio.get_running_loop()
    by_count = params.count is not None
    length = float(params.count if by_count else params.every)  # type: ignore[arg-type]
    slide = None if params.slide is None else float(params.slide)
    windows = Windows(
        length, slide, by="count" if by_count else "time", start=0.0 if by_count else loop.time()
    )
    out = ctx.open_output(params.path) if params.path else None
    encode = msgspec.json.Encoder().encode

    # Time windows are reported in seconds since the start of the run.
    origin = 0.0 if by_count else (ctx.started_at or windows.start)

    # While tracing, each closed window is also a span linked to the batches
    # it covers: (first key, last key, provenance) of recent batches.
    recent: deque[tuple[float, float, Any]] | None = deque() if ctx.tracing else None

    async def emit(closed: list[Any]) -> None:
        if recent is not None and closed:
            for w in closed:
                covers = {key for first, last, key in recent if first < w.end and last >= w.start}
                ctx.record_emit("window emit", covers, **{"flow.window.count": w.count})
            horizon = max(w.start for w in closed)  # later windows start after this
            while recent and recent[0][1] < horizon:
                recent.popleft()
        for w in closed:
            w = msgspec.structs.replace(w, node=ctx.node, start=w.start - origin, end=w.end - origin)
            if out is not None:
                out.write(encode(w) + b"\n")
            await ctx.emit("windows", w)

    seen = 0
    try:
        async for batch in source:
            first = float(seen) if by_count else loop.time()
            for product in batch.products:
                closed = windows.add(float(seen) if by_count else loop.time(), product)
                seen += 1
                if closed:
                    await emit(closed)
            if recent is not None and batch.products:
                key = provenance(batch)
                if key is not None:
                    recent.append((first, float(seen - 1) if by_count else loop.time(), key))
            yield batch
        await emit(windows.flush())
    finally:
        if out is not None:
            out.close()


KIND = window
