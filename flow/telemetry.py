"""OpenTelemetry for a run: one trace, metrics per stage and endpoint.

Configuration: the standard `OTEL_*` variables (endpoint, headers, protocol)
and, in graph.yaml, `telemetry: {traces: otlp|console|none, metrics:
otlp|console|none, protocol: http/protobuf|grpc, endpoint: URL, stage_spans:
eventful|all}`. The default is
OTLP over http/protobuf when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces
variant) is set, else none. With both off, flow uses the API's no-op tracer
and meter: a span or a counter costs a function call.

Spans: `run` (root) > `node NAME` > `stage fetch` per page, with one `GET`
span per attempt (HTTP semantic-convention attributes, no secrets); a later
stage's span for that page (`normalize`, the sink's write) is a child of the
page's fetch span, across nodes, made when the stage records something on it
(every one with `stage_spans: all`; flow.tracing); a closed
window is a `window emit` span linked to the batches it covers. Breaker
transitions, retries, rate-limit waits, dead letters and errors are span
events. Metrics: see `observe_runtime` and flow.metrics. Exporters are
flushed at the end of every run, also after SIGINT or the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace as otel_trace

from . import __version__
from .metrics import LocalCounter, LocalHistogram, LocalMetrics, with_local_metrics

FLUSH_TIMEOUT = 5.0  # seconds the end of a run waits for the exporters


@dataclass
class Telemetry:
    tracer: Any
    meter: Any
    run_id: str
    providers: list[Any] = field(default_factory=list)
    tracing: bool = False  # spans are recorded and exported (else the tracer is a no-op)
    stage_spans: str = "eventful"  # a later stage's span per batch: "eventful" (flow.tracing) or "all"
    metering: bool = False  # metrics are exported (else the meter is a no-op)
    instruments: list[Any] = field(default_factory=list)  # observable instruments, kept alive
    local: LocalMetrics = field(default_factory=LocalMetrics)

    def counter(self, name: str, unit: str = "1", description: str = "") -> LocalCounter:
        """A hot-path counter (flow.metrics: exported with the SDK's metrics)."""
        return self.local.counter(name, unit, description)

    def histogram(self, name: str, unit: str = "s", description: str = "") -> LocalHistogram:
        """A hot-path histogram, explicit buckets in seconds (flow.metrics)."""
        return self.local.histogram(name, unit, description)

    def shutdown(self) -> None:
        """Flush and stop the exporters (idempotent; blocking). Each one's
        shutdown sends what it holds: the span pipeline what waits, the
        metric reader one last collection (a force_flush first would send
        every metric point twice)."""
        for provider in self.providers:
            provider.shutdown()
        self.providers.clear()

    async def flush(self, within: float = FLUSH_TIMEOUT) -> bool:
        """`shutdown()` off the event loop, waited for at most `within`
        seconds (an unreachable collector must not hold the run's end: the
        SDK's metric exporter retries for up to its own timeout). On a daemon
        thread, so that exiting never waits for it either. False: cut short,
        with a warning."""
        if not self.providers:
            return True
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def work() -> None:
            try:
                self.shutdown()
            finally:
                with contextlib.suppress(RuntimeError):  # the loop closed after the bound
                    loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

        threading.Thread(target=work, name="flow-telemetry-flush", daemon=True).start()
        try:
            await asyncio.wait_for(asyncio.shield(done), within)
            return True
        except TimeoutError:
            logging.getLogger("flow.telemetry").warning(
                "telemetry: gave up flushing after %.0fs (collector unreachable or slow); "
                "the rest of this run's telemetry is lost",
                within,
            )
            return False


def otlp_env(name: str, signal: str = "TRACES", default: str = "") -> str:
    """OTEL_EXPORTER_OTLP_<signal>_<name>, else OTEL_EXPORTER_OTLP_<name>
    (read here, not in flow.otlp: a run without telemetry imports no exporter)."""
    return os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_{name}") or os.environ.get(
        f"OTEL_EXPORTER_OTLP_{name}", default
    )


def _metrics_url(endpoint: str) -> str:
    """The OTLP/HTTP metrics URL for graph.yaml's base `endpoint`."""
    base = endpoint.rstrip("/").removesuffix("/v1/traces").removesuffix("/v1/metrics")
    return f"{base}/v1/metrics"


def _choice(config: dict[str, Any], signal: str) -> str:
    chosen = config.get(signal)
    if chosen:
        return str(chosen)
    chosen = os.environ.get(f"OTEL_{signal.upper()}_EXPORTER", "").strip().lower()
    if chosen in ("none", "console"):
        return chosen
    return "otlp" if otlp_env("ENDPOINT", signal.upper()) else "none"


def setup(config: dict[str, Any] | None = None) -> Telemetry:
    """Tracer and meter for one run, from graph.yaml's `telemetry:` and OTEL_*."""
    config = config or {}
    run_id = uuid.uuid4().hex[:16]
    traces, metrics = _choice(config, "traces"), _choice(config, "metrics")
    if traces == "none" and metrics == "none":
        return Telemetry(otel_trace.NoOpTracer(), otel_metrics.NoOpMeter("flow"), run_id)
    from opentelemetry.sdk.resources import Resource

    attributes = {"service.version": __version__, "flow.run_id": run_id}
    if not os.environ.get("OTEL_SERVICE_NAME"):  # the standard variable wins
        attributes["service.name"] = "flow"
    resource = Resource.create(attributes)

    def protocol(signal: str) -> str:
        return str(config.get("protocol") or otlp_env("PROTOCOL", signal, "http/protobuf"))

    endpoint = config.get("endpoint")
    telemetry = Telemetry(otel_trace.NoOpTracer(), otel_metrics.NoOpMeter("flow"), run_id)
    if traces == "console":  # a debugging aid: the SDK's pretty printer
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

        provider = TracerProvider(resource=resource)
        # `out` given: the exporter's default is the sys.stdout of its import time.
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stdout)))
        telemetry.tracer = provider.get_tracer("flow", __version__)
        telemetry.tracing = True
        telemetry.stage_spans = "all"  # the SDK's spans are not deferred (flow.tracing)
        telemetry.providers.append(provider)
    elif traces != "none":  # OTLP: flow's lean spans (flow.spans), batched by flow.otlp
        from .otlp import GRPCSender, HTTPSender, SpanPipeline
        from .spans import Tracer

        sender = GRPCSender(endpoint) if protocol("TRACES") == "grpc" else HTTPSender(endpoint)
        pipeline = SpanPipeline(sender, resource.attributes, ("flow", __version__))
        telemetry.tracer = Tracer(pipeline.add)
        telemetry.tracing = True
        telemetry.stage_spans = str(config.get("stage_spans") or "eventful")
        telemetry.providers.append(pipeline)
    if metrics != "none":
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader

        if metrics == "console":
            metric_exporter: Any = ConsoleMetricExporter(out=sys.stdout)
        elif protocol("METRICS") == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            metric_exporter = OTLPMetricExporter(endpoint=endpoint)
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter as HTTPMetrics,
            )

            metric_exporter = HTTPMetrics(endpoint=_metrics_url(endpoint) if endpoint else None)
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        scope = InstrumentationScope("flow.engine", __version__)  # not "flow": scopes merge by name
        metric_exporter = with_local_metrics(metric_exporter, telemetry.local, resource, scope)
        # A finite interval: the reader's thread is what exports once more at shutdown.
        reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=5000)
        # shutdown_on_exit off: the run flushes it (bounded); an exit hook
        # would wait for an unreachable collector once more.
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)
        telemetry.meter = meter_provider.get_meter("flow", __version__)
        telemetry.metering = True
        telemetry.providers.append(meter_provider)
    return telemetry


def observe_runtime(t: Telemetry, runtime: Any) -> None:
    """Metrics read from the engine's own counters at export time: no
    per-item cost on the hot path."""
    from opentelemetry.metrics import Observation

    def per_stage(field: str) -> Any:
        def observe(options: Any) -> list[Any]:
            return [
                Observation(getattr(s, field), {"flow.node": n, "flow.stage": s.stage})
                for n, node in runtime.stats.items()
                for s in node.stages
            ]

        return observe

    def items_in(options: Any) -> list[Any]:
        return [
            Observation(taken, {"flow.node": n, "flow.stage": node.stages[i].kind.name})
            for n, node in runtime.nodes.items()
            for i in range(len(node.stages))
            if (taken := runtime.taken(node, i)) is not None
        ]

    def breakers(options: Any) -> list[Any]:  # set by the fetch stages through ctx.gauge
        return [
            Observation(value, dict(attributes))
            for (name, attributes), value in list(runtime.resources.gauges.items())
            if name == "flow.breaker.state"
        ]

    def fill(options: Any) -> list[Any]:
        return [
            Observation(b.statistics().fill, {"flow.node": n, "flow.capacity": b.capacity})
            for n, b in runtime.buffers.items()
        ]

    def counters(options: Any) -> list[Any]:
        return [
            Observation(v, {"flow.node": n, "flow.counter": k})
            for n, c in runtime.resources.counters.items()
            for k, v in c.items()
        ]

    meter = t.meter
    t.instruments += [
        meter.create_observable_counter(
            "flow.stage.items_out", [per_stage("items_out")], description="items yielded by a stage"
        ),
        meter.create_observable_counter(
            "flow.stage.items_in", [items_in], description="items taken by a stage"
        ),
        meter.create_observable_counter(
            "flow.stage.errors", [per_stage("errors")], description="stage failures"
        ),
        meter.create_observable_gauge(
            "flow.breaker.state",
            [breakers],
            description="circuit breaker per endpoint: 0 closed, 1 half-open, 2 open",
        ),
        meter.create_observable_gauge(
            "flow.buffer.fill", [fill], description="items waiting in a node's input buffer"
        ),
        meter.create_observable_counter(
            "flow.node.events", [counters], description="pages, retries, dead letters, ..."
        ),
    ]
