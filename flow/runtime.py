"""Running a checked graph: nodes as chained async generators over buffers.

Wiring (one asyncio task per node):

    [input buffer] or a source stage --> stage --> stage --+--> [buffer of reader 1]
                                                           +--> [buffer of reader 2]

- Every edge is a bounded `Buffer`; a node with several inputs reads one
  buffer that all of them write (fan-in); a node read by several nodes puts
  each item into each reader's buffer in turn, so every reader sees every
  item and the slowest sets the pace (fan-out). Items are shared, not copied:
  stages must not mutate what they receive.
- Side outputs (`NODE.errors`, `NODE.dead_letters`, `NODE.windows`, ...)
  are edges like any other: a stage's `await ctx.error(...)` puts the record
  into the buffer of every node reading that port, and waits while one is
  full (backpressure, as on the main output). A port nobody reads costs
  nothing; errors always reach the run report as well. Each node has one
  input buffer read in arrival order, and the graph is acyclic, side edges
  included, so these waits cannot deadlock.
- Stopping (SIGINT, the deadline) ends the sources: a node whose source is
  waiting for its next item is cancelled right there (and only there: the
  cancellation is caught at the source and the rest of the node carries on);
  one busy elsewhere stops before asking its source for more. Everything
  already yielded drains through to the sinks; after `run.grace` the
  remaining tasks are cancelled.
- The engine wraps every stage: it counts what the stage yields and turns an
  exception into an error record (node, stage, error). That branch ends
  there; the node keeps draining its input, counting the items it drops, so
  the nodes upstream never block on it and the run completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from ._interpolate import scrub
from .buffer import Buffer
from .context import RunState, StageContext
from .draining import cancel_in_waves
from .graph import edges
from .items import ErrorRecord, abandon, utc_now
from .ledger import Ledgers, counted, losses, paths, written, yields_records
from .mapping import mapped
from .result import NodeStats, RunResult, StageStats, call_at_end, run_losses
from .spec import Node, Spec
from .tap import NodeTaps
from .telemetry import observe_runtime, setup
from .topology import depths, sources_upstream
from .tracing import Lineage, StageSpans, traced


class Runtime:
    def __init__(
        self, spec: Spec, *, out_dir: str | Path | None = None, telemetry: Any = None, journal: Any = None
    ) -> None:
        self.spec = spec
        self.out_dir = Path(out_dir if out_dir is not None else spec.run.out)
        self.deadline = float(spec.run.deadline)
        self.grace = float(spec.run.grace)
        self.nodes = spec.nodes
        self.stats = {
            name: NodeStats([StageStats(s.kind.name) for s in node.stages])
            for name, node in self.nodes.items()
        }
        wiring = edges(spec)
        # Who reads a node's output (port None) and each of its side outputs.
        self.readers: dict[tuple[str, str | None], list[str]] = {}
        for name, found in wiring.items():
            for edge in found:
                self.readers.setdefault((edge.source, edge.port), []).append(name)
        # A node's input buffer, written by all its inputs (sources have none).
        self.buffers = {
            name: Buffer(node.buffer, producers=len(wiring[name]), name=name)
            for name, node in self.nodes.items()
            if wiring[name]
        }
        # Per node: the taps on its main output (flow.tap, flow.status); empty
        # unless someone watches, and then tested once per item.
        self.taps = {name: NodeTaps() for name in self.nodes}
        self._tasks: list[asyncio.Task[None]] = []
        # Per source: [the task that pulls its items, its async generator].
        # The generator's `ag_running` says whether it is awaiting right now.
        # Not always the node's task: a per-item stage with concurrency pulls
        # its input from a feeder task of its own (flow.mapping).
        self._pulling: list[list[Any]] = []
        self._stop_requested = False  # a plain flag: read once per source item
        self.resources = RunState(self._emit)
        self.resources.secrets = spec.secrets
        self.resources.sources = sources_upstream(self.nodes, wiring)
        sources = [name for name, node in self.nodes.items() if node.stages[0].kind.is_source]
        self.resources.ledgers = Ledgers(sources, paths(spec, wiring))
        self._depth = depths(wiring)
        self.errors = self.resources.errors  # the run report's error records
        self.telemetry = telemetry if telemetry is not None else setup(spec.telemetry)
        self.resources.telemetry, self.resources.run_id = self.telemetry, self.telemetry.run_id
        self.resources.graph = spec.file
        self.resources.journal = journal  # flow.journal: pages for a resumed run, dead letters
        if self.telemetry.tracing:
            self.resources.lineage = Lineage()
        self._stopping = self.resources.stopping
        self.began_before = 0.0  # seconds the run began before this runtime did (a cluster's driver part)

    @property
    def status(self) -> str:
        """"completed", or why the run was stopped ("interrupted", "deadline")."""
        return self.resources.stopped or "completed"

    def buffer_statistics(self) -> dict[str, Any]:
        return {name: buffer.statistics() for name, buffer in self.buffers.items()}

    # --- stopping ------------------------------------------------------------
    def stop(self, reason: str = "interrupted") -> None:
        """Stop the sources; what is in flight drains to the sinks."""
        if self._stopping.is_set():
            return
        self.resources.stopped = reason
        self._stop_requested = True
        self._stopping.set()
        for task, generator in self._pulling:
            if task is not None and generator.ag_running:
                task.cancel()

    def cancel_all(self) -> None:
        """Stop without draining (a second Ctrl-C)."""
        for task in self._tasks:
            task.cancel()

    # --- running -------------------------------------------------------------
    async def run(self) -> RunResult:
        started, started_at = time.monotonic(), utc_now()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._started_at = asyncio.get_running_loop().time()
        self.resources.deadline_at = self._started_at + self.deadline
        self.resources.started_at = self._started_at - self.began_before
        tasks = self._tasks
        observe_runtime(self.telemetry, self)
        if self.resources.journal is not None:
            self.resources.journal.start(self.telemetry.run_id)
        run_span = self.telemetry.tracer.start_span(
            "run", attributes={"flow.run_id": self.telemetry.run_id, "flow.graph": self.spec.file}
        )
        with trace.use_span(run_span, end_on_exit=False):  # node tasks inherit the run's context
            for name, node in self.nodes.items():
                tasks.append(asyncio.create_task(self._node(node), name=f"node:{name}"))
        work = asyncio.gather(*tasks, return_exceptions=True)
        await self._until_done_or_stopped(work)
        if not work.done():
            # Draining after a stop (Ctrl-C, the deadline): bounded by the
            # grace period, which starts at the stop.
            done, _ = await asyncio.wait({work}, timeout=self.grace)
            if not done:
                self._record("grace_exceeded", f"run.grace {self.spec.run.grace} reached")
                await self._cancel(work)
        return await self._finish(work, run_span, started, started_at)

    async def _finish(
        self, work: asyncio.Future[Any], run_span: Any, started: float, started_at: str
    ) -> RunResult:
        """Every node has ended: close the resources, settle the ledger, call
        the run-end callbacks, flush telemetry; the result."""
        await self.resources.close()
        unkept = []
        if self.resources.journal is not None:
            try:
                await self.resources.journal.flush()
            except Exception as exc:  # dead letters not stored, pages a resume fetches again
                self._record("journal_failed", f"{type(exc).__name__}: {exc}")
                unkept.append(f"the run's journal could not be written ({exc})")
        ledger = self.resources.ledger()
        sources = (name for name, node in self.nodes.items() if node.stages[0].kind.is_source)
        silent = [name for name in sources if self.stats[name].stages[-1].items_out == 0]
        lost = run_losses(self.status, self.errors, silent) + losses(ledger) + unkept
        run_span.set_attribute("flow.status", self.status)
        if lost:  # the run span tells the truth too
            run_span.set_status(Status(StatusCode.ERROR, "; ".join(lost)))
        facts = {"run_id": self.telemetry.run_id, "graph": self.spec.file, "status": self.status}
        facts |= {"started_at": started_at, "finished_at": utc_now(), "lost": lost, "ledger": ledger}
        for failure in await call_at_end(self.resources.at_end, facts, self.grace):
            self._record("at_run_end_failed", failure)
        trace_id = run_span.get_span_context().trace_id
        run_span.end()
        # Exporters do blocking HTTP: flushed off the event loop, bounded in time.
        await self.telemetry.flush()
        for outcome in work.result():
            if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
                self._record("internal_error", f"{type(outcome).__name__}: {outcome}")
        counters = {node: dict(c) for node, c in self.resources.counters.items()}
        return RunResult(
            self.status,
            started_at,
            time.monotonic() - started,
            self.stats,
            self.errors,
            self.resources.events,
            counters,
            self.resources.dead_letters,
            lost,
            f"{trace_id:032x}" if trace_id else None,
            self.resources.outputs,
            ledger,
        )

    async def _cancel(self, work: asyncio.Future[Any]) -> None:
        """The grace is over: cancel in waves, upstream first (flow.draining)."""
        sinks = {name for name, node in self.nodes.items() if node.stages[-1].kind.is_sink}
        await cancel_in_waves(dict(zip(self.nodes, self._tasks, strict=True)), self._depth, sinks, work)

    async def _until_done_or_stopped(self, work: asyncio.Future[Any]) -> None:
        """Wait for the nodes to finish, for a stop (`stop()`: Ctrl-C), or for
        the deadline, which stops the run."""
        stopped = asyncio.ensure_future(self._stopping.wait())
        try:
            first = asyncio.FIRST_COMPLETED
            done, _ = await asyncio.wait({work, stopped}, timeout=self.deadline, return_when=first)
        except asyncio.CancelledError:
            self.stop("interrupted")
            done = set()
        finally:
            stopped.cancel()
        if not done and not self._stopping.is_set():
            self.stop("deadline")
            self._record("deadline_exceeded", f"run.deadline {self.spec.run.deadline} reached")

    def taken(self, node: Node, index: int) -> int | None:
        """How many items stage `index` of `node` has taken from its input."""
        if index == 0:
            return None if node.stages[0].kind.is_source else self.buffers[node.name].statistics().taken
        return self.stats[node.name].stages[index - 1].items_out

    async def _failed(self, node: Node, index: int, exc: Exception) -> None:
        """A stage raised: an error record naming the node, the stage and the
        input item it had last taken (1-based; a batch counts as one item),
        on the report and on `NODE.errors`."""
        self.stats[node.name].stages[index].errors += 1
        self.resources.raised += 1
        record = ErrorRecord(
            node=node.name,
            stage=node.stages[index].kind.name,
            error=type(exc).__name__,
            detail=scrub(str(exc) or repr(exc), self.spec.secrets),
            item=self.taken(node, index),
            timestamp=utc_now(),
        )
        self.resources.record_error(record)
        await self._emit(node.name, "errors", record)

    def _record(self, error: str, detail: str) -> None:
        """An error of the run itself (deadline, grace, internal): report only."""
        self.resources.record_error(ErrorRecord(node=None, stage=None, error=error, detail=detail,
                                                timestamp=utc_now()))  # fmt: skip

    async def _emit(self, node: str, port: str, item: Any) -> None:
        """A side output item into the buffer of every node reading it."""
        for reader in self.readers.get((node, port), ()):
            await self.buffers[reader].put(item)

    def _context(self, node: Node, index: int) -> StageContext:
        return StageContext(node.name, node.stages[index].kind.name, index, self.out_dir, self.resources)

    async def _source(self, node: Node) -> AsyncIterator[Any]:
        """The node's source stage, guarded, ending early when the run stops.

        `stop()` cancels the task that is waiting here for the source's next
        item, and only while it waits; the cancellation ends the source, not the node,
        so what the source already yielded is never lost. (The guard's
        counting and error capture are inlined: one generator layer less.)"""
        stage = node.stages[0]
        stats = self.stats[node.name].stages[0]
        generator = stage.kind.run(None, stage.params, self._context(node, 0))
        if not inspect.isasyncgen(generator):  # an async iterator of another make
            generator = _as_generator(generator)
        task = asyncio.current_task()
        pulling = [task, generator]
        self._pulling.append(pulling)
        anext_item = generator.__anext__
        # A concurrent per-item stage pulls its input from a feeder task (flow.mapping):
        # then look the puller up at every pull, else once (it costs ~2%).
        follow = any(s.kind.per_item and getattr(s.params, "in_flight", 1) > 1 for s in node.stages)
        received = yields_records(stage.kind)
        try:
            while not self._stop_requested:
                if follow:
                    task = pulling[0] = asyncio.current_task()
                try:
                    item = await anext_item()
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if not self._stop_requested or task is None:
                        raise
                    task.uncancel()  # the stop ended the source; the node drains on
                    return
                except Exception as exc:
                    await self._failed(node, 0, exc)
                    return
                stats.items_out += 1
                if received:
                    self.resources.receive(node.name, item)
                yield item
        finally:
            with contextlib.suppress(Exception):
                await generator.aclose()  # type: ignore[attr-defined]

    async def _guard(self, node: Node, index: int, generator: AsyncIterator[Any]) -> AsyncIterator[Any]:
        stats = self.stats[node.name].stages[index]
        try:
            async for item in generator:
                stats.items_out += 1
                yield item
        except Exception as exc:  # the stage failed: record it, end this branch
            await self._failed(node, index, exc)
        finally:
            with contextlib.suppress(Exception):
                await generator.aclose()  # type: ignore[attr-defined]

    def _spans(self, node: Node, index: int) -> StageSpans | None:
        """Span maker for a stage, when tracing is on and the kind wants spans."""
        kind = node.stages[index].kind
        if self.resources.lineage is None or not kind.spans:
            return None
        every = self.telemetry.stage_spans == "all"
        return StageSpans(self.telemetry.tracer, self.resources.lineage, node.name, kind.name, every)

    def _latency(self, node: Node, index: int) -> Any:
        """The stage's series of the duration histogram, when metrics are on."""
        if not self.telemetry.metering:
            return None
        histogram = self.telemetry.histogram("flow.stage.duration", "s", "time per item of a stage")
        return histogram.bind({"flow.node": node.name, "flow.stage": node.stages[index].kind.name})

    async def _node(self, node: Node) -> None:
        with self.telemetry.tracer.start_as_current_span(
            f"node {node.name}", attributes={"flow.node": node.name}
        ) as span:
            if self.resources.lineage is not None:
                self.resources.node_spans[node.name] = span
            await self._run_node(node)

    async def _run_node(self, node: Node) -> None:
        buffer = self.buffers.get(node.name)
        first = 1 if node.stages[0].kind.is_source else 0
        stream: AsyncIterator[Any] = self._source(node) if first else aiter(buffer)  # type: ignore[arg-type]
        chain = [stream]
        last = len(node.stages) - 1
        for index in range(first, last + 1):
            stage = node.stages[index]
            params, ctx = stage.params, self._context(node, index)
            spans, latency = self._spans(node, index), self._latency(node, index)
            run, ledgers = stage.kind.run, self.resources.ledgers
            if index == last and node.name in ledgers.sinks:  # the ledger's `written`
                if stage.kind.per_item:
                    run = counted(run, node.name, ledgers)
                else:
                    stream = written(stream, node.name, ledgers, stage.kind.whole)
            if stage.kind.per_item:
                stream = mapped(stream, run, params, ctx, spans, latency)
            elif spans is not None or latency is not None:
                stream = traced(stage.kind.run, stream, params, ctx, spans, latency)
            else:
                stream = stage.kind.run(stream, params, ctx)
            if index < last:  # the last stage is guarded inline below: one layer less
                stream = self._guard(node, index, stream)
            chain.append(stream)
        outputs = [self.buffers[reader] for reader in self.readers.get((node.name, None), ())]
        # The last stage is counted here unless it is the source (counted there).
        stats = self.stats[node.name].stages[last] if last >= first else StageStats("")
        taps = self.taps[node.name]
        try:
            try:
                if outputs:
                    async for item in stream:
                        stats.items_out += 1
                        if taps:
                            taps.offer(item)
                        for output in outputs:
                            await output.put(item)
                else:  # a sink nobody reads, the common end of a graph
                    async for item in stream:
                        stats.items_out += 1
                        if taps:
                            taps.offer(item)
                self.resources.ledgers.commit(node.name)  # a `whole` sink ended well
            except Exception as exc:  # the last stage failed (the others are guarded)
                await self._failed(node, last, exc)
            # If the branch ended on an error, keep taking (and counting) the
            # input so that upstream nodes never block on this one.
            if buffer is not None:
                async for item in buffer:
                    self.stats[node.name].dropped += 1
                    abandon(item, "dropped: its node's branch failed")
        finally:
            # Close the chain downstream first, so every stage's generator and
            # its upstream are finalised here, not by the garbage collector:
            # stages may iterate their source with a plain `async for`.
            for generator in reversed(chain):
                with contextlib.suppress(Exception):
                    await generator.aclose()  # type: ignore[attr-defined]
            taps.end()
            for output in outputs:
                output.done()
            for (source, port), readers in self.readers.items():
                if source == node.name and port is not None:
                    for reader in readers:
                        self.buffers[reader].done()
            self.stats[node.name].seconds = asyncio.get_running_loop().time() - self._started_at


async def _as_generator(items: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for item in items:
        yield item
