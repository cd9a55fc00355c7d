"""flow.tracing's pieces: URLs fit for span attributes, batch provenance,
the bounded lineage table, and spans of streaming stages per item."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flow.context import StageContext
from flow.tracing import Lineage, StageSpans, provenance, traced
from stages.http.paging import PageRequest, PageResponse
from stages.http.urls import safe_url


def test_safe_url_drops_credentials_and_secret_query_values():
    url = safe_url(
        "https://ann:pw@api.example.com:8443/v1/items?api_key=K1&q=shoes", {"token": "T2", "page": "3"}
    )
    assert url == "https://api.example.com:8443/v1/items?api_key=REDACTED&q=shoes&token=REDACTED&page=3"
    assert "pw" not in url and "K1" not in url and "T2" not in url
    assert safe_url("http://h/x") == "http://h/x"


def test_provenance_of_requests_pages_and_batches():
    request = PageRequest("shop", "http://h/p", {}, {}, 4)
    assert provenance(request) == ("shop", 4)
    assert provenance(PageResponse(request, 200, b"[]", {}, 1)) == ("shop", 4)
    assert provenance([1, 2]) is None and provenance({"endpoint": "x", "page": 1}) is None


def _tracer() -> tuple[object, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("t"), exporter


def test_first_span_of_a_batch_is_its_root_and_the_table_is_bounded():
    tracer, exporter = _tracer()
    lineage = Lineage(limit=2)
    fetch, parse = StageSpans(tracer, lineage, "n", "fetch"), StageSpans(tracer, lineage, "n", "parse")
    requests = [PageRequest("e", "u", {}, {}, page) for page in range(3)]
    roots = []
    for request in requests:
        with fetch.current(request) as span:
            roots.append(span)
    parse.start(requests[2]).end()  # page 2: still known -> child of its fetch
    parse.start(requests[0]).end()  # page 0: forgotten (limit 2) -> its own root
    spans = {(s.name, s.attributes["flow.page"]): s for s in exporter.get_finished_spans()}
    assert spans[("stage parse", 2)].parent.span_id == roots[2].get_span_context().span_id
    assert spans[("stage parse", 0)].parent is None
    # The parse span became page 0's new root, which pushed page 1 out.
    links = lineage.links([("e", 1), ("e", 2), ("e", 0)])
    assert [link.attributes["flow.page"] for link in links] == [2, 0]
    assert links[0].context.span_id == roots[2].get_span_context().span_id
    assert links[1].context.span_id == spans[("stage parse", 0)].context.span_id


def test_a_streaming_stage_gets_one_span_per_input_item_with_its_events():
    tracer, exporter = _tracer()
    lineage = Lineage()
    ctx = StageContext("n", "keep_even", 1, __import__("pathlib").Path("."))
    ctx.run.lineage = lineage

    async def keep_even(source, params, ctx):
        async for request in source:
            if request.page % 2:
                await ctx.dead_letter(endpoint="e", page=request.page, position=None, reason="odd")
            else:
                yield request

    async def requests():
        for page in range(5):
            yield PageRequest("e", "u", {}, {}, page)

    async def main() -> list[int]:
        spans = StageSpans(tracer, lineage, "n", "keep_even")
        return [r.page async for r in traced(keep_even, requests(), None, ctx, spans)]

    assert asyncio.run(main()) == [0, 2, 4]
    finished = exporter.get_finished_spans()
    assert [s.attributes["flow.page"] for s in finished] == [0, 1, 2, 3, 4]
    events = {s.attributes["flow.page"]: [e.name for e in s.events] for s in finished}
    assert events == {0: [], 1: ["dead_letter"], 2: [], 3: ["dead_letter"], 4: []}
    assert ctx.span is None


@pytest.mark.parametrize("through", ["context var", "context api"])
def test_current_makes_the_span_current_and_records_only_exceptions_as_use_span_does(through, monkeypatch):
    """Current sets the OpenTelemetry context's variable itself when that is
    the runtime context in use, through the API otherwise: the same either way."""
    from opentelemetry import trace

    from flow import spans
    from flow.spans import Current, Tracer

    assert spans._CURRENT is not None  # the default runtime context: the fast way is taken
    if through == "context api":
        monkeypatch.setattr(spans, "_CURRENT", None)
    ended: list[Any] = []
    tracer = Tracer(ended.append, seed=1)
    outer = trace.get_current_span()
    with tracer.start_as_current_span("ok") as span:
        assert trace.get_current_span() is span
        with tracer.start_span("child", context=None) as _:
            pass
    assert trace.get_current_span() is outer
    for error in (ValueError("bad"), asyncio.CancelledError()):
        span = tracer.start_span("x")
        try:
            with Current(span):
                raise error
        except BaseException as caught:
            assert caught is error
        assert trace.get_current_span() is outer and span.end_ns is not None
    failed, cancelled = ended[-2:]
    assert [e[0] for e in failed.events] == ["exception"] and failed.status.description == "ValueError: bad"
    assert not cancelled.events and not cancelled.status.status_code.value  # not an error: as use_span
    assert [s.name for s in ended[:2]] == ["child", "ok"] and ended[0].parent == ended[1].get_span_context()


def test_flow_span_contexts_are_the_apis():
    """flow.spans builds SpanContexts without their checking __new__: they
    must equal the API's own, valid, local and sampled."""
    from opentelemetry.trace import SpanContext, TraceFlags, TraceState

    from flow.spans import Tracer

    tracer = Tracer(lambda span: None, seed=4)
    root = tracer.start_span("root")
    children = [tracer.child("a", root.get_span_context()), tracer.start_span("b", context=None)]
    for span in (root, *children):
        own = span.get_span_context()
        assert own == SpanContext(
            own.trace_id, own.span_id, False, TraceFlags(TraceFlags.SAMPLED), TraceState()
        )
        assert own.is_valid and not own.is_remote and own.trace_flags.sampled
    assert children[0].parent == root.get_span_context()
    assert children[0].get_span_context().trace_id == root.get_span_context().trace_id
    assert children[1].parent is None  # no current span: a new trace


def test_leaving_a_span_in_another_context_logs_once_and_goes_on(caplog):
    """A span entered in one context and left in another (a generator moved
    across tasks) cannot reset the context: the API logs it, once, and the
    span still ends, as with use_span."""
    import contextvars
    import logging

    from flow.spans import Current, Tracer

    ended: list[Any] = []
    current = Current(Tracer(ended.append, seed=6).start_span("moved"))
    contextvars.copy_context().run(current.__enter__)  # not this test's own context: nothing leaks
    with caplog.at_level(logging.ERROR):
        contextvars.copy_context().run(current.__exit__, None, None, None)
    assert [r.getMessage() for r in caplog.records] == ["Failed to detach context"]
    assert ended == [current.span]


def test_a_client_span_over_the_sdks_tracer():
    """ctx.client_span with `traces: console` (the SDK's tracer): current
    inside the `with`, its attributes and failure on the exported span."""
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, StatusCode

    tracer, exporter = _tracer()
    ctx = StageContext("n", "fetch", 1, __import__("pathlib").Path("."))
    ctx.run.lineage = Lineage()
    ctx.run.telemetry = type("T", (), {"tracer": tracer})()
    with ctx.client_span("GET", {"url.full": "http://h/p"}) as span:
        assert trace.get_current_span().get_span_context() == span.span.get_span_context()
        span.set("http.response.status_code", 503)
        span.failed()
    [finished] = exporter.get_finished_spans()
    assert finished.kind is SpanKind.CLIENT and finished.status.status_code is StatusCode.ERROR
    assert dict(finished.attributes) == {"url.full": "http://h/p", "http.response.status_code": 503}
    ctx.run.lineage = None
    with ctx.client_span("GET", {}) as off:
        assert off is None


def test_a_flow_span_takes_the_whole_span_api_until_it_ends(monkeypatch):
    """Attributes, events and links add up (the first event or link turns the
    shared empty tuple into the span's own list); nothing changes once ended;
    ids are never zero; an invalid parent without a current span starts a trace."""
    from opentelemetry import context as context_api
    from opentelemetry.trace import INVALID_SPAN_CONTEXT

    from flow import spans
    from flow.spans import Tracer

    tracer = Tracer(lambda span: None, seed=9)
    other = tracer.start_span("other").get_span_context()
    span = tracer.start_span("s")
    span.set_attributes({"a": 1, "b": "x"})
    span.set_attribute("c", 2.5)
    span.add_event("e1")
    span.add_event("e2", {"k": "v"}, timestamp=7)
    span.add_link(other, {"why": "covers"})
    span.add_link(other)
    span.add_link(INVALID_SPAN_CONTEXT)  # not valid: left out
    span.update_name("renamed")
    span.end(end_time=10)
    span.set_attribute("late", 1)
    span.add_event("late")
    span.update_name("late")
    assert span.attributes == {"a": 1, "b": "x", "c": 2.5} and span.name == "renamed"
    assert [(e[0], e[2]) for e in span.events] == [("e1", {}), ("e2", {"k": "v"})] and span.events[1][1] == 7
    assert [(link.context, dict(link.attributes or {})) for link in span.links] == [
        (other, {"why": "covers"}),
        (other, {}),
    ]
    assert span.end_ns == 10

    drawn = iter([0, 0, 5, 0, 6])  # zeros are drawn again
    monkeypatch.setattr(tracer, "_bits", lambda bits: next(drawn))
    fresh = tracer.child("c", INVALID_SPAN_CONTEXT)  # no current span either: a new trace
    assert fresh.parent is None and fresh.get_span_context()[:2] == (5, 6)

    class Other:  # another runtime context than the ContextVar one: the API is used
        pass

    monkeypatch.setattr(context_api, "_RUNTIME_CONTEXT", Other())
    assert spans._context_var() is None


def _flow_tracer() -> tuple[Any, list[Any]]:
    from flow.spans import Tracer

    ended: list[Any] = []
    return Tracer(ended.append, seed=1), ended


def test_a_later_stage_span_is_made_only_when_something_is_recorded_on_it():
    tracer, ended = _flow_tracer()
    lineage = Lineage()
    fetch, normalize = (
        StageSpans(tracer, lineage, "n", "fetch"),
        StageSpans(tracer, lineage, "n", "normalize"),
    )
    request = PageRequest("e", "u", {}, {}, 7)
    with fetch.current(request) as root:
        pass
    quiet = normalize.start(request)
    assert quiet.is_recording()
    quiet.end()
    assert not quiet.is_recording() and ended == [root]  # passed through: no span
    busy = normalize.start(request)
    started = busy._start_ns
    busy.add_event("dead_letter", {"position": 3})
    busy.set_attribute("flow.records", 20)
    busy.end()
    busy.add_event("late", {})  # after its end: ignored, as on any span
    made = ended[-1]
    assert len(ended) == 2 and made is busy.made()
    assert made.name == "stage normalize" and made.parent == root.get_span_context()
    assert made.start_ns == started <= made.end_ns
    assert made.attributes == {"flow.node": "n", "flow.endpoint": "e", "flow.page": 7, "flow.records": 20}
    assert [event[0] for event in made.events] == ["dead_letter"]


def test_a_deferred_span_is_made_for_a_child_and_keeps_its_end_when_looked_at_later():
    from opentelemetry import trace

    from flow.spans import Current

    tracer, ended = _flow_tracer()
    lineage = Lineage()
    fetch, sink = StageSpans(tracer, lineage, "n", "fetch"), StageSpans(tracer, lineage, "n", "summary_json")
    request = PageRequest("e", "u", {}, {}, 1)
    fetch.start(request).end()
    with Current(sink.start(request)) as deferred:
        child = tracer.start_span("write")  # under the current span: which must exist now
        child.end()
    assert child.parent == deferred.get_span_context() and deferred.made() in ended
    late = sink.start(request)
    late.update_name("stage renamed")
    late.end(end_time=late._start_ns + 5)
    context = late.get_span_context()  # a link to it after its end: made then, ended at its end
    assert ended[-1].name == "stage renamed" and ended[-1].end_ns == ended[-1].start_ns + 5
    assert ended[-1].get_span_context() is context and not trace.get_current_span().is_recording()


def test_every_batch_gets_its_span_with_stage_spans_all():
    tracer, ended = _flow_tracer()
    lineage = Lineage()
    fetch = StageSpans(tracer, lineage, "n", "fetch")
    sink = StageSpans(tracer, lineage, "n", "summary_json", every_batch=True)
    request = PageRequest("e", "u", {}, {}, 2)
    fetch.start(request).end()
    sink.start(request).end()
    assert [s.name for s in ended] == ["stage fetch", "stage summary_json"]
    assert ended[1].parent == ended[0].get_span_context()


def test_a_deferred_span_is_made_by_an_exception_and_not_by_calls_that_record_nothing():
    from opentelemetry.trace import INVALID_SPAN_CONTEXT, Status, StatusCode

    from flow.spans import Current

    tracer, ended = _flow_tracer()
    lineage = Lineage()
    fetch, normalize = (
        StageSpans(tracer, lineage, "n", "fetch"),
        StageSpans(tracer, lineage, "n", "normalize"),
    )
    request = PageRequest("e", "u", {}, {}, 4)
    fetch.start(request).end()
    quiet = normalize.start(request)
    quiet.set_attributes({})
    quiet.add_link(INVALID_SPAN_CONTEXT)
    quiet.set_status(Status(StatusCode.UNSET))
    quiet.set_status(StatusCode.UNSET)
    quiet.end()
    assert quiet.made() is None and len(ended) == 1
    with pytest.raises(ValueError), Current(normalize.start(request)):
        raise ValueError("bad record")
    failed = ended[-1]
    assert len(ended) == 2 and failed.name == "stage normalize"
    assert (
        failed.status.status_code is StatusCode.ERROR
        and "ValueError: bad record" in failed.status.description
    )
    assert [event[0] for event in failed.events] == ["exception"]


def test_a_deferred_span_is_made_by_attributes_and_valid_links_and_renamed_once_made():
    tracer, ended = _flow_tracer()
    lineage = Lineage()
    fetch, sink = StageSpans(tracer, lineage, "n", "fetch"), StageSpans(tracer, lineage, "n", "summary_json")
    request = PageRequest("e", "u", {}, {}, 5)
    root = fetch.start(request)
    root.end()
    tagged = sink.start(request)
    tagged.set_attributes({"flow.rows": 3})
    tagged.add_link(root.get_span_context(), {"why": "test"})
    tagged.update_name("stage written")  # made already: the made span is renamed
    tagged.end()
    made = ended[-1]
    assert made.name == "stage written" and made.attributes["flow.rows"] == 3
    assert [link.context for link in made.links] == [root.get_span_context()]
