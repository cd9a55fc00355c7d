"""What stages may use from the engine: their context and the run's shared
resources (one HTTP session, named rate limiters, per-node shared state, the
run's error records)."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from opentelemetry import trace

from .ratelimit import Limiters
from .tracing import safe_url


def _attribute(key: str, value: Any) -> Any:
    if key == "url":
        return safe_url(str(value))
    return value if isinstance(value, str | int | float | bool) else str(value)


class RunResources:
    """Created once per run; closed by the engine when the run ends."""

    def __init__(self, record: Callable[..., None], deadline_at: float | None = None) -> None:
        self.record = record
        self.deadline_at = deadline_at  # loop time after which no new request starts
        self.started_at: float | None = None  # loop time the run started
        self.errors: list[dict[str, Any]] = []  # the run's error records (the engine's list)
        self.limiters = Limiters()
        self.node_state: defaultdict[str, dict[str, Any]] = defaultdict(dict)
        self.events: list[dict[str, Any]] = []  # breaker transitions and other notable moments
        self.dead_letters: list[dict[str, Any]] = []  # records that could not be used, and why
        self.windows: dict[str, list[Any]] = {}  # node -> closed windows (flow.windows.WindowStats)
        self._closers: list[Callable[[], Any]] = []
        self.counters: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._session: Any = None
        self.telemetry: Any = None  # flow.telemetry.Telemetry of the run
        self.lineage: Any = None  # flow.tracing.Lineage while tracing is on
        self.node_spans: dict[str, Any] = {}  # node -> its span (tracing on)

    def session(self) -> Any:
        """The run's one aiohttp ClientSession, made on first use."""
        if self._session is None:
            from .fetcher import make_session

            self._session = make_session()
        return self._session

    def on_close(self, closer: Callable[[], Any]) -> None:
        """Call `closer` when the run ends (e.g. shut a thread pool down)."""
        self._closers.append(closer)

    async def close(self) -> None:
        for closer in reversed(self._closers):
            closer()
        self._closers.clear()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


class StageContext:
    """What a stage may ask of the engine."""

    def __init__(
        self, node: str, stage: str, index: int, out_dir: Path, resources: RunResources | None = None
    ) -> None:
        self.node, self.stage, self.index, self.out_dir = node, stage, index, out_dir
        self.resources = resources or RunResources(lambda *a, **k: None)
        # The span of the item this (streaming) stage works on, set by the
        # engine while tracing; per-item stages use the current span instead.
        self.span: Any = None

    @property
    def tracing(self) -> bool:
        """Whether spans are recorded (to skip work that only feeds them)."""
        return self.resources.lineage is not None

    @property
    def shared(self) -> dict[str, Any]:
        """State shared by the stages of this node (e.g. paginate and fetch)."""
        return self.resources.node_state[self.node]

    def record_error(self, error: str, detail: str = "", **fields: Any) -> None:
        """An error record on the run report, attributed to this node and stage
        (`endpoint` defaults to the node: one node fetches one endpoint)."""
        fields.setdefault("endpoint", self.node)
        self.resources.record(self.node, self.stage, error, detail, **fields)
        self.add_event("error", error=error, detail=detail, **fields)

    def add_event(self, name: str, **attributes: Any) -> None:
        """A span event on the span of the item being worked on (no-op when
        tracing is off). Attribute values that are not str/int/float/bool
        are given as text; None values are left out."""
        if self.resources.lineage is None:  # tracing off
            return
        span = self.span if self.span is not None else trace.get_current_span()
        if span.is_recording():
            span.add_event(name, {k: _attribute(k, v) for k, v in attributes.items() if v is not None})

    def record_emit(self, name: str, covers: Iterable[tuple[str, int]], **attributes: Any) -> None:
        """A domain output that sums up many batches (e.g. a closed window):
        a span under the node's span, linked to the root span of each batch
        `(endpoint, page)` it covers. No-op when tracing is off."""
        resources = self.resources
        node_span = resources.node_spans.get(self.node)
        if resources.lineage is None or node_span is None:
            return
        span = resources.telemetry.tracer.start_span(
            name,
            context=trace.set_span_in_context(node_span),
            links=resources.lineage.links(covers),
            attributes={"flow.node": self.node, "flow.stage": self.stage, **attributes},
        )
        span.end()

    def record_event(self, event: str, **fields: Any) -> None:
        """A notable moment (e.g. a breaker transition) on the run report."""
        from .runtime import utc_now

        self.resources.events.append(
            {"node": self.node, "stage": self.stage, "event": event, **fields, "timestamp": utc_now()}
        )
        self.add_event(event, **fields)

    def dead_letter(self, **fields: Any) -> None:
        """A record that could not be used: its source, page, position and reason."""
        from .runtime import utc_now

        self.resources.dead_letters.append(
            {"node": self.node, "stage": self.stage, **fields, "timestamp": utc_now()}
        )
        self.count("dead_letters")
        self.add_event("dead_letter", **{k: v for k, v in fields.items() if k != "raw"})  # raw: data

    def count(self, counter: str, n: int = 1) -> None:
        """Add to one of this node's counters on the run report (e.g. retries)."""
        self.resources.counters[self.node][counter] += n

    def open_output(self, path: str) -> BinaryIO:
        """A binary file for writing under the run's output directory."""
        target = Path(path) if os.path.isabs(path) else self.out_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.open("wb")
