"""flow.otlp_encode writes the same ExportTraceServiceRequest as the
opentelemetry-proto classes; flow.otlp's pipeline batches, retries, drops
when it must and says so; its HTTP and gRPC senders speak to real receivers
on loopback."""

from __future__ import annotations

import asyncio
import gzip
import logging
import threading
from collections.abc import Mapping
from concurrent import futures
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from flow.otlp import GRPCSender, HTTPSender, SpanPipeline
from flow.otlp_encode import Encoder
from flow.spans import Span, Tracer


# The reference: the request built through the generated classes.
def _any_value(value: Any) -> Any:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue

    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list | tuple):
        return AnyValue(array_value=ArrayValue(values=[_any_value(v) for v in value]))
    return AnyValue(string_value=str(value))


def _attributes(attributes: Mapping[str, Any]) -> list[Any]:
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue

    return [KeyValue(key=k, value=_any_value(v)) for k, v in attributes.items() if v is not None]


def reference(spans: list[Any], resource: Mapping[str, Any], scope: tuple[str, str]) -> Any:
    """The same request built through the generated message classes."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1 import trace_pb2

    encoded = []
    for span in spans:
        own, parent = span.get_span_context(), span.parent
        message = trace_pb2.Span(
            trace_id=own.trace_id.to_bytes(16, "big"),
            span_id=own.span_id.to_bytes(8, "big"),
            parent_span_id=parent.span_id.to_bytes(8, "big") if parent is not None else b"",
            name=span.name,
            kind=span.kind.value + 1,  # the API's INTERNAL=0.. vs OTLP's UNSPECIFIED=0, INTERNAL=1..
            start_time_unix_nano=span.start_ns,
            end_time_unix_nano=span.end_ns,
            attributes=_attributes(span.attributes),
            flags=0x101 | (0x200 if parent is not None and parent.is_remote else 0),  # sampled; has is_remote
        )
        for name, when, attributes in span.events:
            message.events.add(time_unix_nano=when, name=name, attributes=_attributes(attributes))
        for link in span.links:
            message.links.add(
                trace_id=link.context.trace_id.to_bytes(16, "big"),
                span_id=link.context.span_id.to_bytes(8, "big"),
                attributes=_attributes(link.attributes or {}),
            )
        status = span.status
        if status.status_code.value:
            message.status.code = status.status_code.value  # UNSET 0, OK 1, ERROR 2 in both
            message.status.message = status.description or ""
        encoded.append(message)
    return ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=Resource(attributes=_attributes(resource)),
                scope_spans=[
                    trace_pb2.ScopeSpans(
                        scope=InstrumentationScope(name=scope[0], version=scope[1]), spans=encoded
                    )
                ],
            )
        ]
    )


scalars = st.one_of(
    st.text(max_size=12),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.binary(max_size=8),
)
values = st.one_of(scalars, st.lists(st.one_of(st.text(max_size=5), st.integers(-5, 5)), max_size=3))
attribute_maps = st.dictionaries(
    st.sampled_from(["flow.node", "flow.page", "k", "url.full", ""]), values, max_size=4
)
ids = st.integers(min_value=1, max_value=2**64 - 1)
contexts = st.builds(
    lambda t, s, remote: SpanContext(t, s, remote, TraceFlags(1)),
    st.integers(min_value=1, max_value=2**128 - 1),
    ids,
    st.booleans(),
)


@st.composite
def spans(draw: Any) -> Span:
    parent = draw(st.none() | contexts)
    own = SpanContext(parent.trace_id if parent else draw(st.integers(1, 2**128 - 1)), draw(ids), False)
    links = [Link(c, draw(attribute_maps)) for c in draw(st.lists(contexts, max_size=2))]
    start = draw(st.integers(min_value=0, max_value=2**63))
    span = Span(
        draw(st.text(max_size=10)),
        own,
        parent,
        draw(st.sampled_from(list(SpanKind))),
        draw(attribute_maps),
        links,
        start,
        lambda s: None,
    )
    for name, attributes in draw(st.lists(st.tuples(st.text(max_size=6), attribute_maps), max_size=3)):
        span.add_event(name, attributes, timestamp=draw(st.integers(1, 2**63)))
    span.set_status(draw(st.sampled_from(list(StatusCode))), draw(st.none() | st.text(max_size=6)))
    span.end(start + draw(st.integers(min_value=0, max_value=10**12)))
    return span


@settings(max_examples=300, deadline=None)
@given(st.lists(spans(), max_size=4), attribute_maps, st.text(max_size=5), st.text(max_size=5))
def test_the_encoder_writes_what_the_generated_classes_write(batch, resource, name, version):
    encoder = Encoder(resource, (name, version))
    for _ in range(2):  # the second time from the attribute cache
        assert ExportTraceServiceRequest.FromString(encoder.request(batch)) == reference(
            batch, resource, (name, version)
        )


def test_status_descriptions_only_travel_with_errors():
    tracer = Tracer(lambda s: None, seed=1)
    span = tracer.start_span("x")
    span.set_status(Status(StatusCode.ERROR, "boom"))
    span.end()
    [decoded] = ExportTraceServiceRequest.FromString(
        Encoder({}, ("flow", "0")).request([span])
    ).resource_spans
    [message] = decoded.scope_spans[0].spans
    assert message.status.code == 2 and message.status.message == "boom"


# --- the pipeline ------------------------------------------------------------
class Recorder:
    """A sender that keeps the decoded requests; fails the first `failures`."""

    target = "recorder"

    def __init__(self, failures: int = 0, why: str = "~HTTP 503") -> None:
        self.requests: list[Any] = []
        self.failures, self.why, self.calls = failures, why, 0

    def send(self, body: bytes) -> tuple[bool, str]:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            return False, self.why
        self.requests.append(ExportTraceServiceRequest.FromString(body))
        return True, ""

    def names(self) -> list[str]:
        return [
            s.name
            for r in self.requests
            for rs in r.resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
        ]


def _finished(tracer: Tracer, n: int) -> None:
    for i in range(n):
        tracer.start_span(f"s{i}").end()


def test_shutdown_sends_every_span_in_batches_of_at_most_batch():
    recorder = Recorder()
    pipeline = SpanPipeline(recorder, {"service.name": "flow"}, ("flow", "0"), batch=4, delay=3600)
    _finished(Tracer(pipeline.add), 10)
    pipeline.shutdown()
    assert recorder.names() == [f"s{i}" for i in range(10)]
    assert all(len(r.resource_spans[0].scope_spans[0].spans) <= 4 for r in recorder.requests)
    assert pipeline.sent == 10 and pipeline.dropped == 0


def test_a_full_batch_is_sent_without_waiting_for_the_timer():
    sent = threading.Event()

    class Signalling(Recorder):
        def send(self, body: bytes) -> tuple[bool, str]:
            result = super().send(body)
            sent.set()
            return result

    recorder = Signalling()
    pipeline = SpanPipeline(recorder, {}, ("flow", "0"), batch=5, delay=3600)  # the timer never fires
    _finished(Tracer(pipeline.add), 5)
    assert sent.wait(30)  # the worker thread was woken by the full batch
    assert recorder.names() == [f"s{i}" for i in range(5)]
    pipeline.shutdown()


def test_beyond_the_limit_spans_are_dropped_and_counted_never_blocking():
    recorder = Recorder()
    pipeline = SpanPipeline(recorder, {}, ("flow", "0"), batch=1000, delay=3600, limit=7)
    _finished(Tracer(pipeline.add), 10)
    pipeline.shutdown()
    assert pipeline.sent == 7 and pipeline.dropped == 3 and len(recorder.names()) == 7


def test_transient_failures_are_retried_then_dropped_with_one_warning(caplog):
    waits: list[float] = []
    recorder = Recorder(failures=2)
    pipeline = SpanPipeline(
        recorder, {}, ("flow", "0"), batch=10, delay=3600, backoff=waits.append or (lambda a: 0)
    )
    pipeline.backoff = lambda attempt: waits.append(attempt) or 0.0
    _finished(Tracer(pipeline.add), 3)
    pipeline.force_flush()
    assert pipeline.sent == 3 and recorder.calls == 3 and waits == [0, 1]  # third try succeeded
    recorder.failures = 10
    _finished(Tracer(pipeline.add), 2)
    with caplog.at_level(logging.WARNING, logger="flow.telemetry"):
        pipeline.force_flush()
        _finished(Tracer(pipeline.add), 2)
        pipeline.force_flush()
    assert pipeline.dropped == 4 and pipeline.sent == 3
    assert [r.getMessage() for r in caplog.records] == [
        "telemetry: spans could not be sent to recorder: HTTP 503"
    ]
    pipeline.shutdown()


def test_permanent_failures_are_not_retried():
    recorder = Recorder(failures=5, why="HTTP 400")
    pipeline = SpanPipeline(recorder, {}, ("flow", "0"), batch=10, delay=3600)
    _finished(Tracer(pipeline.add), 1)
    pipeline.shutdown()
    assert recorder.calls == 1 and pipeline.dropped == 1


# --- real receivers on loopback --------------------------------------------
def test_http_sender_posts_gzip_protobuf_with_the_configured_headers(monkeypatch):
    import http.server

    seen: list[tuple[Any, bytes]] = []
    answers = [503, 200]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.headers, body))  # case-insensitive look-ups
            self.send_response(answers.pop(0))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{server.server_port}/custom/traces"
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20abc,x-team=data")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    try:
        sender = HTTPSender(None)
        assert sender.target.endswith("/custom/traces")
        pipeline = SpanPipeline(
            sender, {"service.name": "flow"}, ("flow", "0"), delay=3600, backoff=lambda a: 0
        )
        _finished(Tracer(pipeline.add), 3)
        pipeline.shutdown()
    finally:
        server.shutdown()
        server.server_close()
    assert len(seen) == 2 and pipeline.sent == 3  # the 503 was retried
    headers, body = seen[-1]
    assert headers["authorization"] == "Bearer abc" and headers["x-team"] == "data"
    assert headers["Content-Type"] == "application/x-protobuf" and headers["Content-Encoding"] == "gzip"
    request = ExportTraceServiceRequest.FromString(gzip.decompress(body))
    assert [s.name for s in request.resource_spans[0].scope_spans[0].spans] == ["s0", "s1", "s2"]


def test_grpc_sender_exports_to_a_trace_service():
    import grpc  # installed with opentelemetry-exporter-otlp
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    received: list[Any] = []

    class Service(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            received.append((request, dict(context.invocation_metadata())))
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        pipeline = SpanPipeline(GRPCSender(f"http://127.0.0.1:{port}"), {}, ("flow", "0"), delay=3600)
        _finished(Tracer(pipeline.add), 2)
        pipeline.shutdown()
    finally:
        server.stop(None)
    [(request, _)] = received
    assert [s.name for s in request.resource_spans[0].scope_spans[0].spans] == ["s0", "s1"]


def test_a_run_cut_by_its_deadline_still_sends_its_spans(tmp_path):
    """The deadline drains, ends the spans and flushes the pipeline before
    `run()` returns: the run span says `deadline` and every node is there."""
    from opentelemetry.metrics import NoOpMeter

    from flow.registry import default_registry
    from flow.runtime import Runtime
    from flow.spec import parse_spec
    from flow.telemetry import Telemetry

    spec = parse_spec(
        "version: 1\nrun: {deadline: 200ms, grace: 2s}\nnodes:\n"
        "  src: {pipe: [{sequence: {items: 100000000, batch: 100}}]}\n"
        "  out: {from: src, pipe: [{collect: {path: n.jsonl}}]}\n",
        default_registry(plugins=False),
        env={},
    )
    recorder = Recorder()
    pipeline = SpanPipeline(recorder, {}, ("flow", "0"), delay=3600)
    telemetry = Telemetry(Tracer(pipeline.add), NoOpMeter("t"), "r", providers=[pipeline], tracing=True)
    result = asyncio.run(Runtime(spec, out_dir=tmp_path, telemetry=telemetry).run())
    assert result.status == "deadline"
    spans = [
        s for r in recorder.requests for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans
    ]
    [run] = [s for s in spans if s.name == "run"]
    assert {a.key: a.value.string_value for a in run.attributes}["flow.status"] == "deadline"
    assert {"node src", "node out"} <= {s.name for s in spans}
    batches = result.nodes["out"].stages[0].items_out
    assert sum(s.name == "stage collect" for s in spans) == batches > 0  # one per batch written
    assert pipeline.dropped == 0


def test_graph_endpoints_are_base_urls_or_full_signal_urls(monkeypatch):
    from flow.otlp import http_endpoint
    from flow.telemetry import _metrics_url

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert http_endpoint("http://c:4318/") == "http://c:4318/v1/traces"
    assert http_endpoint("http://c:4318/v1/traces") == "http://c:4318/v1/traces"
    assert http_endpoint(None) == "http://localhost:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otel.example.com/")
    assert http_endpoint(None) == "https://otel.example.com/v1/traces"
    assert (
        _metrics_url("http://c:4318") == _metrics_url("http://c:4318/v1/traces") == "http://c:4318/v1/metrics"
    )


def test_cached_attributes_keep_values_that_compare_equal_apart():
    """0.0 == -0.0 and 1 == True, yet they encode differently: the encoder's
    attribute cache must not hand one out for the other."""
    tracer = Tracer(lambda s: None, seed=2)
    batch = []
    for value in (0.0, -0.0, 1, True, 1.0):
        span = tracer.start_span("s", attributes={"k": value})
        span.end()
        batch.append(span)
    encoder = Encoder({}, ("flow", "0"))
    decoded = ExportTraceServiceRequest.FromString(encoder.request(batch))
    assert decoded == reference(batch, {}, ("flow", "0"))
    values = [s.attributes[0].value for s in decoded.resource_spans[0].scope_spans[0].spans]
    assert [v.WhichOneof("value") for v in values] == [
        "double_value",
        "double_value",
        "int_value",
        "bool_value",
        "double_value",
    ]
    assert str(values[1].double_value) == "-0.0"


@given(st.integers(min_value=-(2**63), max_value=2**64 - 1))
def test_varints_from_the_table_and_beyond_it_are_protobufs(n):
    from google.protobuf.internal import encoder as pb

    from flow.otlp_encode import varint

    written: list[bytes] = []
    if n < 0:
        pb._SignedVarintEncoder()(written.append, n, True)
    else:
        pb._VarintEncoder()(written.append, n, True)
    assert varint(n) == b"".join(written)


def test_span_names_past_the_cache_limit_still_encode():
    from flow import otlp_encode

    encoder, tracer = Encoder({}, ("flow", "0")), Tracer(lambda span: None, seed=3)
    spans = [tracer.start_span(f"s{i}") for i in range(otlp_encode._CACHE_LIMIT + 5)]
    for span in spans:
        span.end()
    request = ExportTraceServiceRequest.FromString(encoder.request(spans))
    names = [s.name for s in request.resource_spans[0].scope_spans[0].spans]
    assert names == [f"s{i}" for i in range(otlp_encode._CACHE_LIMIT + 5)]
