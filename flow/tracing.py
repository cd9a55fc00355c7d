"""Spans that follow the data through the graph.

A batch is known by its provenance, `(endpoint, page)`: page requests,
fetched pages, parsed records and product batches all carry it. The first
traced stage that works on a batch (in the default graph: `fetch`) becomes
the batch's root; every later stage's span for that batch, in this node or
in a node downstream, is a child of it. In Jaeger a page therefore reads as

    stage fetch  [shop_a page 3]
      GET  (one per attempt)
      stage normalize      (if it dead-lettered records: events)
      stage summary_json   (if it recorded something; with stage_spans: all, always)

and a window emit is a span with one link per batch it covers. Items without
provenance get spans under their node's span.

A later stage's span for a batch is deferred (flow.spans.Deferred): it is
made, from the stage's start, only if the stage records something on it
(an event such as a dead letter, an error, an attribute) or a child span
starts under it. A batch the stage just passed on costs no span; its time
is in the duration histogram all the same. `telemetry: {stage_spans: all}`
makes every one (the whole journey of every page, at about twice the spans).
Only flow's own tracer (OTLP) defers; the SDK's (`traces: console`) makes
every span.

Per-item stages get their span from `flow.mapping`; every other stage but
the sources is wrapped here: a turn begins when the stage takes an item and
ends when it yields its next output or asks for the next input, so it
measures the stage's own work (the downstream stages run while it is
suspended at the yield). Each turn is a sample of the `flow.stage.duration`
histogram and, for kinds that want spans (not `spans=False`: merge,
rate_limit, parse and the cheap in-memory transforms), a span (deferred, as
below). The wrapper is added only when telemetry is on.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, Status, StatusCode

from .spans import Current, Deferred, Tracer

Key = tuple[str, int]


def provenance(item: Any) -> Key | None:
    """`(endpoint, page)` of an item, when it carries them (or its request does)."""
    source = getattr(item, "request", item)
    endpoint, page = getattr(source, "endpoint", None), getattr(source, "page", None)
    if isinstance(endpoint, str) and isinstance(page, int):
        return endpoint, page
    return None


class Lineage:
    """The root span of every batch seen so far, by provenance. Bounded: past
    `limit` batches (pages; ~350 bytes each, 6 MB at the limit) the oldest are
    forgotten, and their later spans hang under their node's span instead.
    Pages stay in flight for far fewer batches than that: buffers hold a few
    batches, dedupe `hold` records, a window one period."""

    def __init__(self, limit: int = 16_384) -> None:
        self.limit = limit
        # key -> the root's SpanContext (its identity only: the finished span,
        # attributes and events, can be freed once exported)
        self._roots: OrderedDict[Key, Any] = OrderedDict()

    def root(self, key: Key) -> Any:
        """The SpanContext of this batch's root span, or None."""
        return self._roots.get(key)

    def parent(self, key: Key | None) -> Any:
        """A Context holding this batch's root, to start a span in (None:
        the current one)."""
        root = self._roots.get(key) if key is not None else None
        return None if root is None else trace.set_span_in_context(trace.NonRecordingSpan(root))

    def claim(self, key: Key, span: Any) -> None:
        """Make `span` the root of this batch, which has none (`root(key)` is None)."""
        self._roots[key] = span.get_span_context()
        if len(self._roots) > self.limit:
            self._roots.popitem(last=False)

    def links(self, keys: Iterable[Key]) -> list[Link]:
        roots = self._roots
        return [Link(roots[k], {"flow.endpoint": k[0], "flow.page": k[1]}) for k in keys if k in roots]


class StageSpans:
    """Starts the spans of one stage of one node. Attributes: `flow.node`,
    and `flow.endpoint` + `flow.page` for items with provenance (the stage
    is in the span's name)."""

    def __init__(
        self, tracer: Any, lineage: Lineage, node: str, stage: str, every_batch: bool = False
    ) -> None:
        self.tracer, self.lineage, self.node = tracer, lineage, node
        self.name = f"stage {stage}"
        # flow's own tracer (flow.spans) takes a batch's root as it is; any
        # other (the SDK's, for console output) a Context holding it.
        self._child = getattr(tracer, "child", None)
        # A batch that has a root gets a Deferred span from flow's tracer:
        # made only if the stage records something on it (`every_batch`: always).
        self._deferred = isinstance(tracer, Tracer) and not every_batch

    def start(self, item: Any) -> Any:
        """A span for `item`, not made current (a stage generator's turns
        interleave with other generators of the same task)."""
        key = provenance(item)
        if key is None:
            return self.tracer.start_span(self.name, attributes={"flow.node": self.node})
        attributes = {"flow.node": self.node, "flow.endpoint": key[0], "flow.page": key[1]}
        lineage = self.lineage
        root = lineage.root(key)
        if root is not None and self._deferred:
            return Deferred(self.tracer, self.name, root, attributes)
        if self._child is not None:
            span = self._child(self.name, root, attributes)
        else:
            span = self.tracer.start_span(self.name, context=lineage.parent(key), attributes=attributes)
        if root is None:
            lineage.claim(key, span)
        return span

    def current(self, item: Any) -> Any:
        """A span for `item`, current inside the `with`, ended on leaving it
        with any exception recorded (per-item stages: each item runs in its
        own task or turn, so the context attach/detach pair up)."""
        return Current(self.start(item))


async def traced(
    run: Any,
    source: AsyncIterator[Any],
    params: Any,
    ctx: Any,
    spans: StageSpans | None,
    latency: Any = None,
) -> AsyncIterator[Any]:
    """A streaming stage measured per input item (see the module doc): with
    `latency` (a flow.metrics.HistogramSeries) the time of each turn, with
    `spans` one span per item (deferred: StageSpans). While a span is open
    it is `ctx.span`, so the stage's events (dead letters, errors) land on it."""
    started: float | None = None

    def end(error: BaseException | None = None) -> None:
        nonlocal started
        if started is not None:
            if latency is not None:
                latency.record(time.perf_counter() - started)
            started = None
        span = ctx.span
        if span is not None:
            ctx.span = None
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            span.end()

    # end() only when a turn is open (a call per item and side otherwise).
    async def inputs() -> AsyncIterator[Any]:
        nonlocal started
        async for item in source:
            if started is not None or ctx.span is not None:
                end()
            if spans is not None:
                ctx.span = spans.start(item)
            started = time.perf_counter()
            yield item
        end()

    feed = inputs()
    outputs = run(feed, params, ctx)
    try:
        async for item in outputs:
            if started is not None or ctx.span is not None:
                end()
            yield item
    except Exception as exc:
        end(exc)
        raise
    finally:
        end()
        for generator in (outputs, feed):
            with contextlib.suppress(Exception):
                await generator.aclose()
