"""A lean implementation of the OpenTelemetry tracing API for flow's spans.

flow starts a handful of spans per page (the fetch, each HTTP attempt, and
`Deferred` ones for normalize and the sink's write, made only when those
record something). The SDK's span costs about 25 µs to
start and end in isolation and 60 µs or more inside a busy run (attribute
cleaning, locks, a read-only copy at the end, sampler calls, garbage), which
took a third off the throughput of the default chain
(bench/telemetry_overhead.py). These spans implement the same API
(`opentelemetry.trace.Span` and `Tracer`, so `trace.use_span`,
`get_current_span`, links and context propagation work unchanged) with
plain slots; a finished span is handed to `flow.otlp.SpanPipeline`, which
encodes batches to the OTLP protobuf messages off the event loop.

What is left out, on purpose: samplers (a run is one trace; sampling it is
all or nothing, so every span is recorded), span processors, and attribute
limits (flow's own code sets the attributes; values are checked when
encoded). Everything flow records is exported.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.trace.span import DEFAULT_TRACE_STATE as _STATE

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)  # immutable, shared
_INTERNAL = SpanKind.INTERNAL
# A SpanContext is a tuple (trace_id, span_id, is_remote, flags, state,
# is_valid); its __new__ checks the id ranges in Python, which ids from
# getrandbits(128 | 64) other than 0 always pass. Built directly here
# (tests/flow/test_tracing.py holds the two to the same value).
_context = functools.partial(tuple.__new__, SpanContext)


class Span(trace.Span):
    """A recording span; `end()` hands it to the tracer's sink once."""

    __slots__ = (
        "_context",
        "_sink",
        "attributes",
        "end_ns",
        "events",
        "kind",
        "links",
        "name",
        "parent",
        "start_ns",
        "status",
    )

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: Any,
        links: Sequence[Link] | None,
        start_ns: int | None,
        sink: Callable[[Span], None],
    ) -> None:
        self.name, self._context, self.parent, self.kind = name, context, parent, kind
        self.attributes: dict[str, Any] = dict(attributes) if attributes else {}
        # Most spans have no links or events: a shared empty tuple until the first.
        self.links: list[Link] | tuple[()] = list(links) if links else ()
        self.events: list[tuple[str, int, dict[str, Any]]] | tuple[()] = ()
        self.status = _UNSET
        self.start_ns = start_ns if start_ns is not None else time.time_ns()
        self.end_ns: int | None = None
        self._sink = sink

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self.end_ns is None

    def set_attributes(self, attributes: Any) -> None:
        if self.end_ns is None:
            self.attributes.update(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        if self.end_ns is None:
            self.attributes[key] = value

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        if self.end_ns is None:
            event = (name, timestamp or time.time_ns(), dict(attributes) if attributes else {})
            if isinstance(self.events, list):
                self.events.append(event)
            else:
                self.events = [event]

    def add_link(self, context: SpanContext, attributes: Any = None) -> None:
        if self.end_ns is None and context.is_valid:
            if isinstance(self.links, list):
                self.links.append(Link(context, attributes))
            else:
                self.links = [Link(context, attributes)]

    def update_name(self, name: str) -> None:
        if self.end_ns is None:
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self.end_ns is not None:
            return
        if isinstance(status, Status):
            self.status = status
        else:
            self.status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Any = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        details = {
            "exception.type": type(exception).__qualname__,
            "exception.message": str(exception),
            "exception.escaped": escaped,
        }
        self.add_event("exception", {**details, **(attributes or {})}, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self.end_ns is None:
            self.end_ns = end_time if end_time is not None else time.time_ns()
            self._sink(self)


class Deferred(trace.Span):
    """A span made only if something is recorded on it: an event, an
    attribute, a status, a link, an exception, or a look at its context (a
    child span, propagation). Until then it holds its name, parent,
    attributes and start time; `end()` without any of that exports nothing.
    flow's per-batch stage spans are deferred (flow.tracing): a batch that a
    stage only passed through costs no span, one it rejected records from
    gets the whole span, from the stage's start, with its events."""

    __slots__ = ("_attributes", "_end_ns", "_name", "_parent", "_real", "_start_ns", "_tracer")

    def __init__(self, tracer: Tracer, name: str, parent: SpanContext, attributes: dict[str, Any]) -> None:
        self._tracer, self._name, self._parent, self._attributes = tracer, name, parent, attributes
        self._start_ns = time.time_ns()
        self._real: Span | None = None
        self._end_ns: int | None = None

    def made(self) -> Span | None:
        """The span, if it was made."""
        return self._real

    def _span(self) -> Span:
        real = self._real
        if real is None:
            real = self._real = self._tracer._make(
                self._name, self._parent, self._attributes, _INTERNAL, None, self._start_ns
            )
            if self._end_ns is not None:  # looked at after its end (a link to it): it ended then
                real.end(self._end_ns)
        return real

    def get_span_context(self) -> SpanContext:
        return self._span().get_span_context()

    def is_recording(self) -> bool:
        return self._end_ns is None

    def set_attributes(self, attributes: Any) -> None:
        if self._end_ns is None and attributes:
            self._span().set_attributes(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        if self._end_ns is None:
            self._span().set_attribute(key, value)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        if self._end_ns is None:
            self._span().add_event(name, attributes, timestamp)

    def add_link(self, context: SpanContext, attributes: Any = None) -> None:
        if self._end_ns is None and context.is_valid:
            self._span().add_link(context, attributes)

    def update_name(self, name: str) -> None:
        if self._real is not None:
            self._real.update_name(name)
        elif self._end_ns is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        code = status.status_code if isinstance(status, Status) else status
        if self._end_ns is None and (code is not StatusCode.UNSET or self._real is not None):
            self._span().set_status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Any = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        if self._end_ns is None:
            self._span().record_exception(exception, attributes, timestamp, escaped)

    def end(self, end_time: int | None = None) -> None:
        if self._end_ns is None:
            self._end_ns = end_time if end_time is not None else time.time_ns()
            if self._real is not None:
                self._real.end(self._end_ns)


class Tracer(trace.Tracer):
    """Starts `Span`s; a span without a valid parent in `context` (or the
    current context) starts a new trace."""

    def __init__(self, sink: Callable[[Span], None], seed: int | None = None) -> None:
        self._sink = sink
        self._bits = random.Random(seed).getrandbits

    def _id(self, bits: int) -> int:
        value = self._bits(bits)
        while not value:  # all-zero ids are invalid
            value = self._bits(bits)
        return value

    def start_span(
        self,
        name: str,
        context: Any = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Any = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        parent = trace.get_current_span(context).get_span_context()
        return self._make(name, parent if parent.is_valid else None, attributes, kind, links, start_time)

    def child(self, name: str, parent: SpanContext | None, attributes: Any = None) -> Span:
        """An internal span under `parent`, a SpanContext; with None (or an
        invalid one) under the current span: start_span without a Context to
        look the parent up in (flow.tracing passes a batch's root this way)."""
        if parent is None or not parent[5]:  # [5]: is_valid
            parent = trace.get_current_span().get_span_context()
            if not parent.is_valid:
                parent = None
        return self._make(name, parent, attributes, _INTERNAL, None, None)

    def _make(
        self,
        name: str,
        parent: SpanContext | None,
        attributes: Any,
        kind: SpanKind,
        links: Sequence[Link] | None,
        start_time: int | None,
    ) -> Span:
        """A span under `parent`, or the root of a new trace."""
        bits = self._bits
        trace_id = (bits(128) or self._id(128)) if parent is None else parent[0]
        own = _context((trace_id, bits(64) or self._id(64), False, _SAMPLED, _STATE, True))
        return Span(name, own, parent, kind, attributes, links, start_time, self._sink)

    def start_as_current_span(  # type: ignore[override]  # a Current, not a generator CM
        self,
        name: str,
        context: Any = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Any = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Current:
        span = self.start_span(name, context, kind, attributes, links, start_time)
        return Current(span, end_on_exit, record_exception, set_status_on_exception)


def _context_var() -> Any:
    """The ContextVar behind the OpenTelemetry context, when it is the
    default runtime context (OTEL_PYTHON_CONTEXT may choose another): a span
    made current through it directly skips four calls of the context API.
    None: the API is used."""
    runtime = getattr(context_api, "_RUNTIME_CONTEXT", None)
    if type(runtime) is ContextVarsRuntimeContext:
        return getattr(runtime, "_current_context", None)
    return None


_CURRENT = _context_var()


class Current:
    """`opentelemetry.trace.use_span` as a plain class: the span is current
    inside the `with`; an Exception leaving it is recorded on the span and
    sets its status (not a BaseException such as CancelledError, as in
    use_span); the span ends on leaving. A generator-based context manager
    costs about twice as much, and flow enters one or two per page."""

    __slots__ = ("_end", "_record", "_set_status", "_token", "span")

    def __init__(
        self, span: Any, end_on_exit: bool = True, record_exception: bool = True, set_status: bool = True
    ) -> None:
        self.span, self._end = span, end_on_exit
        self._record, self._set_status = record_exception, set_status

    def __enter__(self) -> Any:
        if _CURRENT is None:
            self._token = context_api.attach(trace.set_span_in_context(self.span))
        else:  # what set_span_in_context + attach do, in place
            self._token = _CURRENT.set(Context({**_CURRENT.get(), _SPAN_KEY: self.span}))
        return self.span

    def __exit__(self, kind: Any, error: BaseException | None, traceback: Any) -> None:
        if _CURRENT is None:
            context_api.detach(self._token)
        else:
            _reset(self._token)
        span = self.span
        if isinstance(error, Exception) and span.is_recording():
            if self._record:
                span.record_exception(error)
            if self._set_status:
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        if self._end:
            span.end()


def _reset(token: Any) -> None:
    try:
        _CURRENT.reset(token)
        return
    except Exception:  # a token of another context (a generator moved across tasks), or used
        pass
    context_api.detach(token)  # fails again and logs it once, as the API's detach does
