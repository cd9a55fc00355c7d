"""`RunState`: the engine's side of what a run's stages share (flow.context).
One per run, owned by the runtime; touched only from the run's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from . import ledger
from .items import ErrorRecord

T = TypeVar("T")
Emit = Callable[[str, str, Any], Awaitable[None]]


class RunState:
    """Created once per run by the runtime; what its stages share through the
    engine. Everything here is touched only from the run's event loop."""

    def __init__(self, emit: Emit | None = None, deadline_at: float | None = None) -> None:
        self.deadline_at = deadline_at  # loop time after which no new request starts
        self.started_at: float | None = None  # loop time the run started
        self.errors: list[dict[str, Any]] = []  # the run report's error records
        self.events: list[dict[str, Any]] = []  # breaker transitions and other notable moments
        # The run report's dead letters (no raw records): the first
        # DEAD_LETTER_SAMPLE, not every one (route NODE.dead_letters to a sink
        # for all of them); the ledger counts them all.
        self.dead_letters: list[dict[str, Any]] = []
        self.counters: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.gauges: dict[tuple[str, tuple[tuple[str, Any], ...]], float] = {}
        self.telemetry: Any = None  # flow.telemetry.Telemetry of the run
        self.lineage: Any = None  # flow.tracing.Lineage while tracing is on
        self.node_spans: dict[str, Any] = {}  # node -> its span (tracing on)
        self.emitted: list[tuple[str, str, Any]] = []  # side items when no runtime routes them
        self.secrets: dict[str, str] = {}  # values taken from the environment -> ${NAME}
        self.sources: dict[str, list[str]] = {}  # node -> the source nodes whose output reaches it
        self.ledgers = ledger.Ledgers()  # the runtime sets the graph's sources and paths
        self.raised = 0  # items or stages that raised (their error records name an exception)
        self.stopped: str | None = None  # why the run was stopped early ("interrupted", "deadline")
        self.stopping = asyncio.Event()  # set when it is stopped
        self.outputs: list[str] = []  # files the stages write, for the run's last line
        self.run_id = ""  # the run's id (telemetry's flow.run_id; sinks record it)
        self.graph = ""  # the graph file's path
        # Called once the run has ended, with its status, losses and ledger (ctx.at_run_end).
        self.at_end: list[Callable[[dict[str, Any]], Any]] = []
        # Where ctx.say's lines go (the CLI: stderr, unless quiet); None: the report only.
        self.announce: Callable[[str], None] | None = None
        self.confined = False  # every output under the output directory, absolute paths too (flow test)
        self.cluster: str | None = None  # the cluster run's id when this runs as a shard (flow.cluster)
        self.routes: Any = None  # flow.serving.Routes under `flow serve` (ctx.route), else None
        self.service_url = ""  # the service's base URL under `flow serve`
        self.tape: Any = None  # flow.tape.Tape: traffic recorded (flow run --record) or played (flow test)
        self.journal: Any = None  # flow.journal.Journal: pages kept for a resumed run, dead letters
        # (series, key) -> counts per second since the start (ctx.tick): bounded by the deadline.
        self.timeline: dict[tuple[str, str], list[int]] = {}
        self._emit = emit
        # key -> (resource, close); closed in reverse order of creation.
        self._resources: dict[Hashable, tuple[Any, Callable[[Any], Any] | None]] = {}

    def ledger(self) -> dict[str, dict[str, Any]]:
        """Every source's ledger as of now (flow.ledger)."""
        return self.ledgers.rows(self.counters)

    def tick(self, series: str, key: str, at: float | None = None) -> None:
        """One more `series` event for `key` in the second of the run holding
        loop time `at` (default now)."""
        if self.started_at is None:
            return
        second = int((asyncio.get_running_loop().time() if at is None else at) - self.started_at)
        if second < 0:
            return
        counts = self.timeline.get((series, key))
        if counts is None:
            counts = self.timeline[(series, key)] = []
        if len(counts) <= second:
            counts.extend([0] * (second + 1 - len(counts)))
        counts[second] += 1

    def count(self, node: str, counter: str, n: int = 1, on: str | None = None) -> None:
        """`counter` += n, counted at `node`, on the ledger of source `on` (default: the node)."""
        source = on or node
        self.counters[source][counter] += n
        if counter in ledger.FLOWS:  # record counts are kept by node too (flow.ledger: paths)
            self.ledgers.flows[source][node][counter] += n

    def receive(self, node: str, item: Any) -> None:
        """Records a source stage yielded: received where they enter the graph."""
        if ledger.holds_records(type(item)):
            for source, n in item.records_by_source().items():
                self.count(node, ledger.RECEIVED, n, source)

    async def emit(self, node: str, port: str, item: Any) -> None:
        if self._emit is None:
            self.emitted.append((node, port, item))
        else:
            await self._emit(node, port, item)

    def record_error(self, record: ErrorRecord) -> None:
        self.errors.append(record.to_dict())

    def resource(self, key: Hashable, factory: Callable[[], T], close: Callable[[T], Any] | None) -> T:
        found = self._resources.get(key)
        if found is None:
            found = self._resources[key] = (factory(), close)
        return found[0]  # type: ignore[no-any-return]

    async def close(self) -> None:
        """Close every resource, newest first; one failing close does not
        keep the others open."""
        resources, self._resources = list(self._resources.values()), {}
        for value, close in reversed(resources):
            if close is None:
                continue
            with contextlib.suppress(Exception):
                result = close(value)
                if inspect.isawaitable(result):
                    await result
