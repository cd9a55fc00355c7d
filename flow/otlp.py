"""Finished spans to an OTLP receiver: batching, protobuf encoding, sending.

`SpanPipeline.add` (called by `Span.end` on the event loop) appends to a
deque; a daemon thread wakes every `delay` seconds, or as soon as `batch`
spans wait, takes up to `batch` of them, encodes one
`ExportTraceServiceRequest` (flow.otlp_encode) and sends it
over OTLP/HTTP (protobuf body, `POST .../v1/traces`) or OTLP/gRPC. The deque
is bounded: beyond `limit` waiting spans new ones are counted as dropped,
never blocking the run. `shutdown()` sends everything still waiting.

Configuration follows the OTLP exporter specification: endpoint
(`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as is, else `OTEL_EXPORTER_OTLP_ENDPOINT`
+ `/v1/traces`, else http://localhost:4318/v1/traces; gRPC: localhost:4317),
headers (`OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`, `k=v,k2=v2`), timeout
(`..._TIMEOUT`, milliseconds, default 10 s), compression (`..._COMPRESSION=gzip`),
CA file for https (`..._CERTIFICATE`). Transient failures (connection errors,
408/429/502/503/504, gRPC UNAVAILABLE) are retried twice with backoff; a
batch that still fails is dropped and counted, and one warning names the
endpoint and the reason; until a batch goes through again, later batches
get one try each.
"""

from __future__ import annotations

import gzip
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .otlp_encode import Encoder
from .telemetry import otlp_env

log = logging.getLogger("flow.telemetry")
_RETRYABLE = {408, 429, 502, 503, 504}


class Settings:
    """The exporter settings both senders share, read once from OTEL_*."""

    def __init__(self) -> None:
        self.headers = parse_headers(otlp_env("HEADERS"))
        self.timeout = float(otlp_env("TIMEOUT", default="10000")) / 1000  # the spec's milliseconds
        self.gzip = otlp_env("COMPRESSION").lower() == "gzip"
        self.certificate = otlp_env("CERTIFICATE")  # a CA file for https / TLS gRPC


def parse_headers(text: str) -> dict[str, str]:
    headers = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            headers[urllib.parse.unquote(key.strip()).lower()] = urllib.parse.unquote(value.strip())
    return headers


def http_endpoint(configured: str | None) -> str:
    """graph.yaml's `endpoint` is the collector's base URL (a full
    `.../v1/traces` is taken as is); then the OTEL_* variables."""
    if configured:
        configured = configured.rstrip("/")
        return configured if configured.endswith("/v1/traces") else configured + "/v1/traces"
    if os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return os.environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318")
    return base.rstrip("/") + "/v1/traces"


# --- sending -----------------------------------------------------------------
class HTTPSender:
    def __init__(self, endpoint: str | None) -> None:
        settings = Settings()
        self.target = http_endpoint(endpoint)
        self.headers = {**settings.headers, "content-type": "application/x-protobuf"}
        self.timeout, self.gzip = settings.timeout, settings.gzip
        if self.gzip:
            self.headers["content-encoding"] = "gzip"
        self.context = None
        if settings.certificate:
            import ssl

            self.context = ssl.create_default_context(cafile=settings.certificate)

    def send(self, body: bytes) -> tuple[bool, str]:
        """(sent, why not); retryable failures are said with a leading '~'."""
        data = gzip.compress(body) if self.gzip else body
        request = urllib.request.Request(self.target, data=data, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as response:
                response.read()
            return True, ""
        except urllib.error.HTTPError as err:
            return False, f"{'~' if err.code in _RETRYABLE else ''}HTTP {err.code}"
        except urllib.error.URLError as err:  # refused, unresolvable, TLS: err.reason says which
            return False, f"~{err.reason}"
        except (OSError, ValueError) as err:
            return False, f"~{type(err).__name__}: {err}"


class GRPCSender:
    def __init__(self, endpoint: str | None) -> None:
        import grpc
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

        settings = Settings()
        target = endpoint or otlp_env("ENDPOINT", default="http://localhost:4317")
        parts = urllib.parse.urlsplit(target if "://" in target else f"http://{target}")
        address = f"{parts.hostname}:{parts.port or 4317}"
        if parts.scheme == "http" or otlp_env("INSECURE").lower() == "true":
            self.channel = grpc.insecure_channel(address)
        else:
            roots = Path(settings.certificate).read_bytes() if settings.certificate else None
            self.channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(roots))
        self.target = address
        # The request is already serialized (flow.otlp_encode): send its bytes as they are.
        self.export = self.channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=lambda body: body,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        self.metadata = list(settings.headers.items())
        self.timeout = settings.timeout
        self.compression = grpc.Compression.Gzip if settings.gzip else None
        self._grpc = grpc

    def send(self, body: bytes) -> tuple[bool, str]:
        try:
            self.export(body, metadata=self.metadata, timeout=self.timeout, compression=self.compression)
            return True, ""
        except self._grpc.RpcError as err:
            code = err.code()  # type: ignore[attr-defined]
            retry = code in (self._grpc.StatusCode.UNAVAILABLE, self._grpc.StatusCode.DEADLINE_EXCEEDED)
            return False, f"{'~' if retry else ''}gRPC {code.name}"


# --- the pipeline ------------------------------------------------------------
class SpanPipeline:
    def __init__(
        self,
        sender: Any,
        resource: Mapping[str, Any],
        scope: tuple[str, str],
        *,
        batch: int = 2048,
        delay: float = 2.0,
        limit: int = 100_000,
        backoff: Callable[[int], float] = lambda attempt: 0.25 * 2**attempt,
    ) -> None:
        self.sender, self.resource, self.scope = sender, dict(resource), scope
        self.encoder = Encoder(self.resource, scope)
        self.batch, self.delay, self.limit, self.backoff = batch, delay, limit, backoff
        self.waiting: deque[Any] = deque()  # append/popleft are atomic: no lock
        self.sent = self.dropped = 0
        self._wake = threading.Event()
        self._stopping = False
        self._warned = False
        self._reachable = True
        self._thread = threading.Thread(target=self._run, name="flow-otlp-spans", daemon=True)
        self._thread.start()

    def add(self, span: Any) -> None:
        """Span.end's sink: never blocks; beyond `limit` waiting, drops."""
        waiting = self.waiting
        if len(waiting) >= self.limit:
            self.dropped += 1
            return
        waiting.append(span)
        if len(waiting) == self.batch:
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping:
            full = self._wake.wait(self.delay)
            self._wake.clear()
            # Woken by a full batch: send full batches only (spans keep
            # arriving while one is sent; trickling them out one small
            # request at a time would cost more than it saves). On the timer:
            # everything.
            self._send_waiting(full_only=full)

    def _send_waiting(self, full_only: bool = False) -> None:
        waiting, batch = self.waiting, self.batch
        while len(waiting) >= batch or (waiting and not full_only):
            self._export([waiting.popleft() for _ in range(min(batch, len(waiting)))])

    def _export(self, spans: list[Any]) -> None:
        body = self.encoder.request(spans)
        why = ""
        # While the receiver is down (the last batch failed for good), one try
        # per batch: retrying every batch would hold the run's end for long.
        tries = 3 if self._reachable else 1
        for attempt in range(tries):
            ok, why = self.sender.send(body)
            if ok:
                self.sent += len(spans)
                self._reachable = True
                return
            if not why.startswith("~") or attempt == tries - 1:
                break
            time.sleep(self.backoff(attempt))
        self._reachable = False
        self.dropped += len(spans)
        if not self._warned:
            self._warned = True
            log.warning("telemetry: spans could not be sent to %s: %s", self.sender.target, why.lstrip("~"))

    def force_flush(self) -> None:
        """Send what is waiting now, from the calling thread."""
        self._send_waiting()

    def shutdown(self) -> None:
        """Send everything still waiting, then stop (idempotent)."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join()
        self._send_waiting()
        if isinstance(self.sender, GRPCSender):
            self.sender.channel.close()
