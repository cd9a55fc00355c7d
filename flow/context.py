"""What a stage may ask of the engine: its `StageContext`.

One documented surface, used by every stage kind, built-in or not:

    side outputs    await ctx.error(...), await ctx.dead_letter(...),
                    await ctx.emit(port, item)     -> NODE.errors / .dead_letters / .PORT
    counters        ctx.count(name, n, on=source); ctx.counters(node) to read them back;
                    ctx.ledger(source): a source's pages and records (flow.ledger);
                    ctx.tick(series, key): per-second counts, read by ctx.timeline()
    events          ctx.record_event(name, ...)    a notable moment: run report + span event
                    ctx.say(name, text, ...)        one the user should read now: stderr too
                    ctx.add_event(name, ...)       a span event only (retries, waits)
                    ctx.record_emit(name, covers)  an output summing up many batches (a window)
    telemetry       ctx.client_span(name, attrs), ctx.histogram/counter(...), ctx.gauge(...)
                    (no-ops while telemetry is off; stages never see a tracer or meter)
    resources       ctx.resource(key, factory, close): one per key and run, closed by the engine
    resuming        ctx.keep(key, value) / ctx.recall(key): what a resumed run takes instead of
                    doing the work again (fetch: pages); ctx.keeping: whether the run keeps them
    recordings      ctx.taping, ctx.tape(key, exchange), ctx.played(key): traffic recorded by
                    `flow run --record` and played by `flow test` (flow.tape)
    serving         ctx.route(method, path, handler), ctx.serving, ctx.service_url: HTTP
                    routes while the graph runs under `flow serve` (flow.serving)
                    (these three groups: flow.outside)
    run facts       ctx.deadline_at, ctx.started_at (loop time), ctx.out_dir, ctx.open_output(),
                    ctx.run_id, ctx.graph; ctx.at_run_end(callback): the run's status and ledger

`RunState` (flow.run_state) is the engine's side of it: one per run, owned
by the runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Hashable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ._interpolate import scrub
from .items import DeadLetter, ErrorRecord, utc_now
from .outside import Outside
from .run_state import RunState
from .spans import Current

__all__ = ["RunState", "StageContext"]
T = TypeVar("T")
DEAD_LETTER_SAMPLE = 1000  # dead letters run.json lists (memory stays flat however many there are)


def _attribute(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) else str(value)


class ClientSpan(Current):
    """What a stage may do to its client span: add attributes, mark it
    failed. As a context manager: current inside the `with` (flow.spans.Current)."""

    __slots__ = ()

    def __enter__(self) -> ClientSpan:
        super().__enter__()
        return self

    def set(self, key: str, value: str | int | float | bool) -> None:
        self.span.set_attribute(key, value)

    def failed(self) -> None:
        self.span.set_status(_ERROR)


_NO_SPAN = contextlib.nullcontext(None)  # reusable: enters as None


_ERROR = Status(StatusCode.ERROR)


class _Off:
    """A metric instrument while metrics are off: every call is a no-op."""

    def record(self, *args: Any) -> None:
        pass

    def add(self, *args: Any) -> None:
        pass

    def bind(self, attributes: dict[str, Any]) -> _Off:
        return self


_OFF = _Off()


class StageContext(Outside):
    """What a stage may ask of the engine (see the module doc)."""

    def __init__(self, node: str, stage: str, index: int, out_dir: Path, run: RunState | None = None) -> None:
        self.node, self.stage, self.index, self.out_dir = node, stage, index, out_dir
        self.run = run or RunState()
        # The span of the item this (streaming) stage works on, set by the
        # engine while tracing; per-item stages use the current span instead.
        self.span: Any = None

    def __repr__(self) -> str:
        return f"<StageContext {self.node}[{self.index}] {self.stage}>"

    # --- run facts -------------------------------------------------------------
    @property
    def deadline_at(self) -> float | None:
        return self.run.deadline_at

    @property
    def started_at(self) -> float | None:
        return self.run.started_at

    @property
    def sources(self) -> list[str]:
        """The source nodes whose output reaches this node (a report lists
        every one, a silent one too)."""
        return self.run.sources.get(self.node, [])

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def graph(self) -> str:
        """The graph file's path."""
        return self.run.graph

    def at_run_end(self, callback: Callable[[dict[str, Any]], Any]) -> None:
        """Call `callback(run)` once the run has ended, after every stage:
        `run` has run_id, graph, status, started_at, finished_at, lost and
        ledger (as in run.json). It may be a coroutine function (given
        run.grace to finish); it runs before the exporters are flushed, and
        an exception in it becomes one of the run's errors."""
        self.run.at_end.append(callback)

    @property
    def stopped(self) -> str | None:
        """Why the run was stopped early ("interrupted", "deadline"), or None."""
        return self.run.stopped

    @property
    def stopping(self) -> asyncio.Event:
        """Set when the run is stopped (Ctrl-C, the deadline): wait on it to
        cut a pause short, e.g. a retry's backoff, instead of outliving the grace."""
        return self.run.stopping

    @property
    def tracing(self) -> bool:
        """Whether spans are recorded (to skip work that only feeds them)."""
        return self.run.lineage is not None

    def open_output(self, path: str) -> BinaryIO:
        """A binary file for writing under the run's output directory."""
        target = self.output_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.open("wb")

    def output_path(self, path: str) -> Path:
        """`path` resolved against the run's output directory (and noted as
        one of the run's outputs); an absolute path stays as it is, but in a
        confined run (`flow test`), which writes nothing outside it."""
        if not os.path.isabs(path):
            target = self.out_dir / path
        elif self.run.confined:
            target = self.out_dir / path.lstrip(os.sep)
        else:
            target = Path(path)
        if str(target) not in self.run.outputs:
            self.run.outputs.append(str(target))
        return target

    # --- side outputs ------------------------------------------------------------
    async def error(
        self, error: str, detail: str = "", *, endpoint: str | None = None, **fields: Any
    ) -> None:
        """An error record on `NODE.errors` and the run report (`endpoint`
        defaults to the node: one source node fetches one endpoint)."""
        if self.run.secrets:  # reports and spans never echo values from the environment
            detail = self.scrub(detail)
            fields = {k: self.scrub(v) if isinstance(v, str) else v for k, v in fields.items()}
        record = ErrorRecord(
            node=self.node,
            stage=self.stage,
            error=error,
            detail=detail,
            timestamp=utc_now(),
            endpoint=endpoint or self.node,
            fields=fields,
        )
        self.run.record_error(record)
        self.add_event("error", error=error, detail=detail, endpoint=record.endpoint, **fields)
        self._span_failed(f"{error}: {detail}")
        await self.run.emit(self.node, "errors", record)

    async def dead_letter(
        self,
        *,
        endpoint: str,
        page: int | None,
        position: int | None,
        reason: str,
        raw: Any = None,
        id: Any = None,
        timestamp: str | None = None,
    ) -> None:
        """A record that could not be used, on `NODE.dead_letters`: its
        source, page, position, reason and the record as served. `timestamp`
        (flow.items.utc_now's format): when it was found, now by default; a
        stage that works a batch at once may pass the batch's."""
        letter = DeadLetter(
            node=self.node,
            stage=self.stage,
            endpoint=endpoint,
            page=page,
            position=position,
            reason=reason,
            raw=raw,
            id=id,
            timestamp=timestamp or utc_now(),
        )
        run = self.run
        sample = len(run.dead_letters) < DEAD_LETTER_SAMPLE
        if sample or run.lineage is not None:  # else nothing reads these fields
            fields = {"endpoint": endpoint, "page": page, "position": position, "reason": reason, "id": id}
            if sample:
                run.dead_letters.append({"node": self.node, "stage": self.stage, **fields})
            self.add_event("dead_letter", **fields)  # not the record: it is data
        self.count("dead_letters", on=endpoint)
        if run.journal is not None:
            run.journal.dead_letter(letter)  # for `flow replay`
        await run.emit(self.node, "dead_letters", letter)

    async def emit(self, port: str, item: Any) -> None:
        """An item on this node's side output `port` (declared by the kind)."""
        await self.run.emit(self.node, port, item)

    def scrub(self, text: str) -> str:
        """`text` with every value taken from the environment (`${KEY}` in
        graph.yaml) replaced by its `${NAME}`: for what goes into reports and
        spans (URLs, details)."""
        return scrub(text, self.run.secrets) if self.run.secrets else text

    # --- counters and events -------------------------------------------------------
    def count(self, counter: str, n: int = 1, *, on: str | None = None) -> None:
        """Add to a counter on the run report (e.g. retries): this node's, or
        with `on` the ledger of the source an item came from (its endpoint),
        so a source's pages and records add up wherever they are counted."""
        self.run.count(self.node, counter, n, on)

    def ledger(self, source: str) -> dict[str, Any]:
        """Where `source`'s pages and records went (flow.ledger); in a sink,
        as far as this sink is concerned (`expected`, `written`,
        `unaccounted`: numbers)."""
        row = self.run.ledgers.row(source, self.run.counters.get(source, {}), self.node)
        records = row["records"]
        if self.node in records["written"]:
            for key in ("expected", "written", "unaccounted"):
                records[key] = records[key][self.node]
        return row

    def tick(self, series: str, key: str, at: float | None = None) -> None:
        """Count one `series` event for `key` (e.g. "requests", an endpoint)
        in the second of the run holding loop time `at` (default now): a
        timeline, for reports."""
        self.run.tick(series, key, at)

    def timeline(self) -> dict[str, dict[str, list[int]]]:
        """series -> key -> counts per second since the run started, as of now."""
        out: dict[str, dict[str, list[int]]] = {}
        for (series, key), counts in self.run.timeline.items():
            out.setdefault(series, {})[key] = list(counts)
        return out

    def events(self) -> list[dict[str, Any]]:
        """The run's notable moments so far (breaker transitions, ...), as in run.json."""
        return list(self.run.events)

    def gauges(self, name: str) -> list[tuple[dict[str, Any], float]]:
        """Every series of gauge `name`: (its attributes, its value)."""
        return [(dict(attrs), value) for (gauge, attrs), value in self.run.gauges.items() if gauge == name]

    def counters(self, node: str | None = None) -> dict[str, int]:
        """A copy of a node's counters (default: this node's)."""
        return dict(self.run.counters.get(node or self.node, {}))

    def record_event(self, event: str, **fields: Any) -> None:
        """A notable moment (e.g. a breaker transition) on the run report."""
        self.run.events.append(
            {"node": self.node, "stage": self.stage, "event": event, **fields, "timestamp": utc_now()}
        )
        self.add_event(event, **fields)

    def say(self, event: str, text: str, **fields: Any) -> None:
        """A choice made for the user (e.g. a detected paging style), to read
        now: `NODE: text` on stderr (the CLI, unless quiet) and an event with
        `text` and `fields` on the report."""
        self.record_event(event, text=text, **fields)
        if self.run.announce is not None:
            self.run.announce(f"{self.node}: {text}")

    def add_event(self, name: str, **attributes: Any) -> None:
        """A span event on the span of the item being worked on (no-op when
        tracing is off). Values that are not str/int/float/bool are given as
        text; None values are left out."""
        span = self._item_span()
        if span is not None:
            span.add_event(name, {k: _attribute(v) for k, v in attributes.items() if v is not None})

    def _span_failed(self, description: str) -> None:
        """The span of the item being worked on ends in error (tracing on)."""
        span = self._item_span()
        if span is not None:
            span.set_status(Status(StatusCode.ERROR, description))

    def _item_span(self) -> Any:
        """The recording span of the item being worked on, or None (tracing
        off): a streaming stage's `span`, else the current one."""
        if self.run.lineage is None:
            return None
        span = self.span if self.span is not None else trace.get_current_span()
        return span if span.is_recording() else None

    def record_emit(self, name: str, covers: Iterable[tuple[str, int]], **attributes: Any) -> None:
        """A domain output that sums up many batches (e.g. a closed window):
        a span under the node's span, linked to the root span of each batch
        `(endpoint, page)` it covers. No-op when tracing is off."""
        run = self.run
        node_span = run.node_spans.get(self.node)
        if run.lineage is None or node_span is None:
            return
        span = run.telemetry.tracer.start_span(
            name,
            context=trace.set_span_in_context(node_span),
            links=run.lineage.links(covers),
            attributes={"flow.node": self.node, "flow.stage": self.stage, **attributes},
        )
        span.end()

    # --- telemetry --------------------------------------------------------------------
    def client_span(self, name: str, attributes: dict[str, Any]) -> AbstractContextManager[ClientSpan | None]:
        """A client span (e.g. one HTTP attempt), current inside the `with`;
        enters as a ClientSpan, or None while tracing is off. The span starts
        here: use it in a `with` at once. Callers pass only attributes fit
        for export (no secrets)."""
        if self.run.lineage is None:
            return _NO_SPAN
        tracer = self.run.telemetry.tracer
        return ClientSpan(tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes))

    def histogram(self, name: str, unit: str = "s", description: str = "") -> Any:
        """An engine-owned histogram (`.record(value, attrs)`, `.bind(attrs)`);
        a no-op while metrics are off."""
        return self.run.telemetry.histogram(name, unit, description) if self.metering else _OFF

    def counter(self, name: str, unit: str = "1", description: str = "") -> Any:
        """An engine-owned counter (`.add(n, attrs)`); a no-op while metrics are off."""
        return self.run.telemetry.counter(name, unit, description) if self.metering else _OFF

    @property
    def metering(self) -> bool:
        telemetry = self.run.telemetry
        return telemetry is not None and telemetry.metering

    def gauge(self, name: str, value: float, **attributes: Any) -> None:
        """Set a gauge series (e.g. a breaker's state); exported while metrics are on."""
        self.run.gauges[(name, tuple(sorted(attributes.items())))] = value

    # --- resources ----------------------------------------------------------------------
    def resource(self, key: Hashable, factory: Callable[[], T], close: Callable[[T], Any] | None = None) -> T:
        """The run's resource under `key`, made by `factory()` on first use and
        closed with `close(resource)` (sync or async) when the run ends. Use a
        key naming the owner (`("fetch", node, index)`) for private state, a
        shared one (`"http.sessions"`) for what several stages share."""
        return self.run.resource(key, factory, close)
