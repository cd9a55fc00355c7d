"""A run exports real OTLP/HTTP protobuf to a receiver on loopback: one
trace with the span tree, HTTP attributes without secrets, retry and breaker
events, and the stage metrics matching the report."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from flow.registry import default_registry
from flow.runtime import Runtime
from flow.spec import parse_spec
from flow.telemetry import setup
from mocks import MockServer, ServerSpec

SECRET_KEY = "reqres-SECRET-key-42"
SECRET_TOKEN = "tok-SECRET-123"
GRAPH = f"""\
version: 1
run: {{deadline: 60s}}
mocks: {{shop: {{style: reqres}}}}
telemetry: {{traces: otlp, metrics: otlp}}
nodes:
  shop:
    pipe:
      - paginate: {{url: "${{mocks.shop.url}}/api/products", style: page, params: {{token: {SECRET_TOKEN}}},
                   headers: {{x-api-key: {SECRET_KEY}}}}}
      - rate_limit: {{rate: 200/s}}
      - fetch: {{retry: {{retries: 6, backoff: 10ms, max: 50ms}}, breaker: {{failures: 2, cooldown: 100ms}}}}
      - parse: {{schema: reqres}}
      - normalize: {{preset: reqres}}
  out: {{from: shop, pipe: [{{window: {{count: 25}}}}, summary_json]}}
"""


class Receiver:
    def __init__(self) -> None:
        self.bodies: dict[str, list[bytes]] = defaultdict(list)

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies[request.path].append(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")


async def run_with_receiver(tmp_path: Any, graph: str = GRAPH, **config: Any) -> tuple[Receiver, Any]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.handle)
    app.router.add_post("/v1/metrics", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    spec_server = ServerSpec(
        style="reqres",
        products=100,
        api_key=SECRET_KEY,
        error_rate=0.3,
        defect_rate=0.1,
        seed=3,
        rate_limit="off",
    )
    try:
        async with MockServer(spec_server) as shop:
            spec = parse_spec(graph, default_registry(plugins=False), env={}, refs={"shop": shop.url})
            endpoint = f"http://127.0.0.1:{port}"
            telemetry = setup({"traces": "otlp", "metrics": "otlp", "endpoint": endpoint, **config})
            runtime = Runtime(spec, out_dir=tmp_path, telemetry=telemetry)
            result = await runtime.run()
    finally:
        await runner.cleanup()
    return receiver, result


def test_one_trace_with_the_span_tree_and_no_secrets(tmp_path):
    receiver, result = asyncio.run(run_with_receiver(tmp_path))
    assert result.status == "completed" and result.counters["shop"]["products"] > 0
    raw = b"".join(receiver.bodies["/v1/traces"]) + b"".join(receiver.bodies["/v1/metrics"])
    assert SECRET_KEY.encode() not in raw and SECRET_TOKEN.encode() not in raw
    spans = []
    for body in receiver.bodies["/v1/traces"]:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            assert resource["service.name"] == "flow" and resource["flow.run_id"]
            for scope in resource_spans.scope_spans:
                spans.extend(scope.spans)
    assert len({s.trace_id for s in spans}) == 1  # one trace per run
    by_id = {s.span_id: s for s in spans}
    [root] = [s for s in spans if s.name == "run"]
    assert root.parent_span_id == b""
    nodes = [s for s in spans if s.name.startswith("node ")]
    assert {s.name for s in nodes} == {"node shop", "node out"}
    assert all(s.parent_span_id == root.span_id for s in nodes)
    fetches = [s for s in spans if s.name == "stage fetch"]
    assert fetches and all(by_id[s.parent_span_id].name == "node shop" for s in fetches)
    attempts = [s for s in spans if s.name == "GET"]
    assert attempts and all(by_id[s.parent_span_id].name == "stage fetch" for s in attempts)
    attrs = [{a.key: a.value for a in s.attributes} for s in attempts]
    for a in attrs:
        assert a["http.request.method"].string_value == "GET"
        assert (
            a["url.full"].string_value.startswith("http://127.0.0.1:")
            and "token=REDACTED" in a["url.full"].string_value
        )
        assert a["server.address"].string_value == "127.0.0.1"
        assert "http.response.status_code" in a and "http.request.resend_count" in a
    assert any(a["http.request.resend_count"].int_value > 0 for a in attrs)  # retries happened
    events = {e.name for s in spans for e in s.events}
    assert "retry" in events and "breaker" in events
    assert result.trace_id == root.trace_id.hex()  # run.json names the trace to open in Jaeger
    assert (result.lost, root.status.code) == ([], 0)  # nothing lost: the run span is not an error


def test_a_run_that_lost_pages_says_so_in_its_spans(tmp_path):
    """Pages that fail for good (a 404 path): their fetch spans end in error,
    and so does the run span, whose description says what was lost."""
    graph = GRAPH.replace("/api/products", "/api/nope")
    receiver, result = asyncio.run(run_with_receiver(tmp_path, graph))
    assert result.lost and result.errors
    spans = _spans(receiver)
    erred = [s for s in spans if any(e.name == "error" for e in s.events)]
    assert erred and all(s.status.code == 2 for s in erred)  # STATUS_CODE_ERROR
    [root] = [s for s in spans if s.name == "run"]
    assert root.status.code == 2 and "failed for good" in root.status.message


def _spans(receiver: Receiver) -> list[Any]:
    """Every span the receiver got, decoded from the OTLP protobuf."""
    return [
        span
        for body in receiver.bodies["/v1/traces"]
        for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans
        for scope in resource_spans.scope_spans
        for span in scope.spans
    ]


def _attrs(span: Any) -> dict[str, Any]:
    return {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes}


@pytest.mark.parametrize("stage_spans", ["eventful", "all"])
def test_context_travels_with_the_batches(tmp_path, stage_spans):
    """Each later stage's span for a page is a child of that page's fetch
    span, also across nodes; window emits link to the batches they cover;
    dead letters are events on the normalize span of their batch. By
    default a later stage's span exists only where the stage recorded
    something (here: normalize, on the pages with dead letters); with
    `stage_spans: all`, for every page and stage."""
    receiver, result = asyncio.run(run_with_receiver(tmp_path, stage_spans=stage_spans))
    spans = _spans(receiver)
    by_id = {s.span_id: s for s in spans}
    fetch_of_page = {_attrs(s)["flow.page"]: s for s in spans if s.name == "stage fetch"}
    assert len(fetch_of_page) == result.counters["shop"]["pages"]
    later = [s for s in spans if s.name in {"stage normalize", "stage summary_json"}]
    for span in later:
        parent = by_id[span.parent_span_id]
        assert parent.name == "stage fetch"
        assert _attrs(parent)["flow.page"] == _attrs(span)["flow.page"]
        assert parent.start_time_unix_nano <= span.start_time_unix_nano <= span.end_time_unix_nano
    normalized = sorted(_attrs(s)["flow.page"] for s in later if s.name == "stage normalize")
    sink_pages = sorted(_attrs(s)["flow.page"] for s in later if s.name == "stage summary_json")
    if stage_spans == "all":  # every page's products reach the sink: a span per page and stage
        assert normalized == sink_pages == sorted(fetch_of_page)
    else:  # the sink recorded nothing; normalize only its dead letters
        rejected = sorted({letter["page"] for letter in result.dead_letters})
        assert sink_pages == [] and normalized == rejected and len(rejected) >= 2
        assert len(normalized) < len(fetch_of_page)  # pages without dead letters cost no span
    assert not any(
        s.name in {"stage rate_limit", "stage paginate", "stage window", "stage merge"} for s in spans
    )

    emits = [s for s in spans if s.name == "window emit"]
    products = result.counters["shop"]["products"]
    assert len(emits) == -(-products // 25)  # count windows of 25, the last one partial
    assert sum(_attrs(s)["flow.window.count"] for s in emits) == products
    fetch_ids = {s.span_id for s in fetch_of_page.values()}
    for emit in emits:
        assert by_id[emit.parent_span_id].name == "node out"
        assert emit.links and all(link.span_id in fetch_ids for link in emit.links)
    linked = {link.span_id for emit in emits for link in emit.links}
    assert linked == fetch_ids  # every batch is covered by some window

    letters = [
        (s, e) for s in spans for e in s.events if e.name == "dead_letter"
    ]  # one event per dead letter, on the normalize span of its page
    assert len(letters) == len(result.dead_letters) > 0
    for span, event in letters:
        assert span.name == "stage normalize"
        page = {a.key: a.value.int_value for a in event.attributes}["page"]
        assert page == _attrs(span)["flow.page"]


def _points(receiver: Receiver) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    """metric name -> [(attributes, data point)], from the last export (the
    cumulative totals at the end of the run)."""
    points: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    for body in receiver.bodies["/v1/metrics"]:
        for rm in ExportMetricsServiceRequest.FromString(body).resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    data = getattr(metric, metric.WhichOneof("data"))
                    points[metric.name] = [
                        ({a.key: getattr(a.value, a.value.WhichOneof("value")) for a in p.attributes}, p)
                        for p in data.data_points
                    ]
    return points


def test_stage_metrics_match_the_report(tmp_path):
    receiver, result = asyncio.run(run_with_receiver(tmp_path))
    points = _points(receiver)
    items = {(a["flow.node"], a["flow.stage"]): p.as_int for a, p in points["flow.stage.items_out"]}
    taken = {(a["flow.node"], a["flow.stage"]): p.as_int for a, p in points["flow.stage.items_in"]}
    report = json.loads((tmp_path / "summary.json").read_text())
    pages = result.counters["shop"]["pages"]
    products = sum(1 for _ in report["products"])
    assert items[("shop", "normalize")] == result.nodes["shop"].stages[-1].items_out == pages
    assert result.counters["shop"]["products"] == products  # the products in those batches
    assert items[("shop", "fetch")] == pages == taken[("shop", "parse")]
    assert taken[("out", "window")] == pages == items[("out", "summary_json")]
    errors = {(a["flow.node"], a["flow.stage"]): p.as_int for a, p in points["flow.stage.errors"]}
    assert set(errors.values()) == {0}  # no stage failed (page failures are error records)

    durations = {a["flow.stage"]: p for a, p in points["flow.stage.duration"]}
    assert durations["fetch"].count == pages and durations["fetch"].sum > 0
    assert durations["normalize"].count == pages
    assert durations["parse"].count == durations["window"].count == durations["summary_json"].count == pages
    assert {a["flow.node"] for a, _ in points["flow.buffer.fill"]} == {"out"}
    assert all(p.as_int >= 0 for _, p in points["flow.buffer.fill"])

    by_status: dict[Any, int] = {}
    for a, p in points["flow.http.requests"]:
        by_status[a.get("http.response.status_code", a.get("error.type"))] = p.as_int
    attempts = sum(by_status.values())
    assert by_status[200] == pages and set(by_status) - {200} and attempts > pages  # 5xx were retried
    [(_, wait)] = points["flow.rate_limit.wait"]
    assert wait.count == attempts  # one slot per attempt, retries included
    counters = {
        a["flow.counter"]: p.as_int for a, p in points["flow.node.events"] if a["flow.node"] == "shop"
    }
    assert counters["retry"] == attempts - pages == result.counters["shop"]["retry"]
    assert counters["dead_letters"] == len(result.dead_letters)
    assert counters["products"] == products  # the products normalize put out = the report's
    [(breaker, state)] = points["flow.breaker.state"]
    assert breaker == {"flow.endpoint": "shop"} and state.as_int in {0, 1, 2}


def test_sigint_still_delivers_the_spans(tmp_path):
    """Interrupted runs flush their exporters: the run span (status
    interrupted) and the node spans reach the receiver."""
    import http.server
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    bodies: dict[str, list[bytes]] = defaultdict(list)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies[self.path].append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        (tmp_path / "g.yaml").write_text(
            "version: 1\nnodes:\n  a: {pipe: [{sequence: {items: 1000000000, batch: 1}}]}\n"
            "  out: {from: a, pipe: [{collect: {path: n.jsonl}}]}\n"
        )
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "flow", "run", "g.yaml", "--out", "o", "--no-progress"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        output = tmp_path / "o" / "n.jsonl"
        deadline = time.monotonic() + 30
        while not (output.exists() and output.stat().st_size > 0):
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, stderr
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    spans = [
        span
        for body in bodies["/v1/traces"]
        for rs in ExportTraceServiceRequest.FromString(body).resource_spans
        for scope in rs.scope_spans
        for span in scope.spans
    ]
    [run] = [s for s in spans if s.name == "run"]
    status = {a.key: a.value.string_value for a in run.attributes}["flow.status"]
    assert status == "interrupted"
    assert {s.name for s in spans} >= {"run", "node a", "node out"}
    assert len({s.trace_id for s in spans}) == 1


def test_the_standard_variables_choose_the_exporters(monkeypatch):
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    off = setup({})
    assert not off.tracing and not off.metering  # nothing configured: no-op tracer and meter
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "shop-sync")
    on = setup({})
    try:
        assert on.tracing and not on.metering
        [pipeline] = on.providers
        assert pipeline.resource["service.name"] == "shop-sync"
        assert pipeline.resource["flow.run_id"] == on.run_id
        assert pipeline.sender.target == "http://127.0.0.1:9/v1/traces"
    finally:
        on.shutdown()  # no spans were made: nothing is sent
    overridden = setup({"traces": "none", "metrics": "none"})  # graph.yaml beats the environment
    assert not overridden.tracing and not overridden.metering


def test_console_traces_print_the_span_tree(tmp_path, capfd):
    spec = parse_spec(
        "version: 1\nnodes:\n  a: {pipe: [{sequence: {items: 3, batch: 1}}]}\n"
        "  out: {from: a, pipe: [{collect: {path: n.jsonl}}]}\n",
        default_registry(plugins=False),
        env={},
    )
    telemetry = setup({"traces": "console", "metrics": "none"})
    result = asyncio.run(Runtime(spec, out_dir=tmp_path, telemetry=telemetry).run())
    assert result.status == "completed"
    printed = capfd.readouterr().out
    names = [json.loads(block)["name"] for block in printed.replace("}\n{", "}\x00{").split("\x00")]
    assert sorted(names) == sorted(["run", "node a", "node out"] + ["stage collect"] * 3)


def test_flushing_is_bounded_when_the_exporters_hang(caplog):
    """An unreachable collector must not hold the end of a run: flush()
    waits `within` seconds (virtual time here), warns, and returns."""
    import logging
    import threading

    from opentelemetry.metrics import NoOpMeter
    from opentelemetry.trace import NoOpTracer

    from flow.telemetry import Telemetry
    from flow.testing import run_virtual

    release = threading.Event()

    class Hanging:
        def shutdown(self) -> None:
            release.wait(30)

    class Quick:
        def shutdown(self) -> None:
            pass

    with caplog.at_level(logging.WARNING, logger="flow.telemetry"):
        assert run_virtual(Telemetry(NoOpTracer(), NoOpMeter("t"), "r", providers=[Quick()]).flush(5.0))
        assert not caplog.records
        hanging = Telemetry(NoOpTracer(), NoOpMeter("t"), "r", providers=[Hanging()])
        assert run_virtual(hanging.flush(5.0)) is False
    release.set()
    assert [r.getMessage() for r in caplog.records] == [
        "telemetry: gave up flushing after 5s (collector unreachable or slow); the rest of this run's telemetry is lost"
    ]


def test_an_unreachable_collector_is_one_line_on_stderr_and_loses_no_data(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "g.yaml").write_text(
        "version: 1\nnodes:\n  a: {pipe: [{sequence: {items: 50, batch: 5}}]}\n"
        "  out: {from: a, pipe: [{collect: {path: n.jsonl}}]}\n"
    )
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_METRICS_EXPORTER": "none",
    }
    done = subprocess.run(
        [sys.executable, "-m", "flow", "run", "g.yaml", "--out", "o", "--no-progress"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        f"flow: telemetry: spans could not be sent to http://127.0.0.1:{port}/v1/traces: [Errno 111] Connection refused"
    ]
    assert len((tmp_path / "o" / "n.jsonl").read_text().splitlines()) == 50


def test_the_end_of_a_run_exports_the_metrics_once_with_their_last_values(capsys):
    """The metric reader's shutdown collects and exports by itself: the end
    of a run must not flush it first as well (every point would go twice)."""
    from opentelemetry.metrics import Observation

    telemetry = setup({"traces": "none", "metrics": "console"})
    telemetry.meter.create_observable_counter("flow.test.items", [lambda options: [Observation(7)]])
    series = telemetry.histogram("flow.test.duration").bind({"flow.stage": "s"})
    for value in (0.01, 0.2, 3.0):
        series.record(value)
    telemetry.shutdown()
    text, decoder, exports, at = capsys.readouterr().out, json.JSONDecoder(), [], 0
    while text[at:].strip():  # the console exporter prints one indented JSON document per export
        document, at = decoder.raw_decode(text, len(text) - len(text[at:].lstrip()))
        exports.append(document)
    assert len(exports) == 1
    metrics = {
        m["name"]: m["data"]["data_points"]
        for rm in exports[0]["resource_metrics"]
        for sm in rm["scope_metrics"]
        for m in sm["metrics"]
    }
    assert metrics["flow.test.items"][0]["value"] == 7
    assert metrics["flow.test.duration"][0]["count"] == 3
