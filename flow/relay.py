"""The fan-in of a cluster run: what the shards relay to the driver's nodes.

A node whose stage kinds are all `driver` kinds (a report of the whole run:
`report`) does not run in the shards. Each shard has a relay node in its
place, reading what that node reads there, and the driver runs the node
once the shards have ended, on everything they relayed:

    shard:  products ──┐            bounded channel        driver (flow.cli.cluster)
            *.windows ─┼─> _relay_page ─> Channel ──pull──> Spool (a file) ─> _gather_page ─> page
            *.errors ──┘   (digest)        (ROOM items)      per shard

- The relay passes each item through the `digest` of the node's first kind (a
  product batch crosses as its counts: ProductTally) and awaits room in the
  shard's channel: a driver that falls behind slows the shard, never drops.
- The relay is the shard's sink for the node: the shard's ledger counts the
  records it handed on, as it would count the node's.
- The driver pulls each channel as the shard runs and appends what comes
  to a spool on disk (memory holds one pull). A shard whose process died
  and was started again runs its part again from the start, so what its
  earlier process relayed is dropped (each process sends a mark of its
  own). A pull the driver cannot finish makes the spool broken: a loss.
- Once every shard has ended, the driver runs its part: each driver node
  reads its spooled items, shard by shard, and sees the run through the
  shards' figures: their ledgers (as far as their relay for it was
  concerned), counters, request timelines, gauges and events (`install`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import pickle
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from .registry import Params, StageKind
from .spec import Node, Spec, StageSpec

ROOM = 256  # items a shard's channel holds before its relays wait
PULL = 256  # items the driver takes from a channel per call
PULL_TRIES = 5  # pulls in a row an actor may be unavailable for (0.2, 0.4, ... s apart), then it is gone
RELAY, GATHER = "_relay_", "_gather_"  # node-name prefixes: no graph's node starts with "_"
STATUS = "_status"  # a shard's status (flow.status) in its channel, for the driver's --status-port
SAY = "_say"  # a line said (ctx.say) in a shard, for the driver's stderr
EVERY = 1.0  # seconds between a shard's statuses


def driver_nodes(spec: Spec) -> list[str]:
    """The nodes that run in the driver: every stage of them a `driver` kind."""
    return [name for name, node in spec.nodes.items() if all(s.kind.driver for s in node.stages)]


class Channel:
    """A bounded queue of (driver node, item) from the relays of one shard to
    the driver, which takes lists of them. Everything here runs on the
    shard's event loop (the Ray actor's): the condition needs no other lock."""

    def __init__(self, room: int = ROOM) -> None:
        self.room = room
        self._items: list[tuple[str, Any]] = []
        self._latest: Any = None  # the shard's newest status, replaced by the next (never waits)
        self._said: list[str] = []  # lines for the driver to show (ctx.say): few, and they never wait
        self._saying: set[asyncio.Future[None]] = set()
        self._closed = False
        self._changed = asyncio.Condition()
        self.most = 0  # the most items it held at once: what the bound was tested by

    async def offer(self, status: Any) -> None:
        """The shard's status as of now (flow.status), in place of one not yet taken."""
        async with self._changed:
            self._latest = status
            self._changed.notify_all()

    def say(self, text: str) -> None:
        """A line for the driver to show now (ctx.say: a choice made for the
        user, `NODE: text`); it takes no room and never waits."""
        saying = asyncio.ensure_future(self._say(text))
        self._saying.add(saying)
        saying.add_done_callback(self._saying.discard)

    async def _say(self, text: str) -> None:
        async with self._changed:
            self._said.append(text)
            self._changed.notify_all()

    async def put(self, to: str, item: Any) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._items) < self.room)
            self._items.append((to, item))
            self.most = max(self.most, len(self._items))
            self._changed.notify_all()

    async def take(self, most: int = PULL) -> tuple[list[tuple[str, Any]], bool]:
        """Up to `most` items (after the lines said, as (SAY, text); and the
        newest status, as (STATUS, it)), waiting for one; and whether none
        will follow."""
        async with self._changed:
            await self._changed.wait_for(self._ready)
            said, self._said = [(SAY, text) for text in self._said], []
            taken, self._items = self._items[:most], self._items[most:]
            if self._latest is not None:
                taken.append((STATUS, self._latest))
                self._latest = None
            self._changed.notify_all()
            return said + taken, self._closed and not self._items and self._latest is None

    def _ready(self) -> bool:
        return bool(self._items) or bool(self._said) or self._latest is not None or self._closed

    async def close(self) -> None:
        """Nothing more will be put (the shard's run has ended)."""
        await asyncio.gather(*self._saying)  # every line said reaches the channel first
        async with self._changed:
            self._closed = True
            self._changed.notify_all()


class RelayParams(Params):
    to: str  # the driver node it relays for


def with_relays(spec: Spec, channel: Channel) -> Spec:
    """A shard's part: every driver node replaced by a relay node reading
    what it reads here (its inputs whose node is left; wildcards stay)."""
    for name in driver_nodes(spec):
        node = spec.nodes.pop(name)
        inputs = [i for i in node.inputs if i.startswith("*.") or i.split(".", 1)[0] in spec.nodes]
        if not inputs:
            continue
        kind = _relay_kind(channel, node.stages[0].kind.digest)
        stage = StageSpec(kind, RelayParams(to=name), node.path)
        spec.nodes[RELAY + name] = Node(RELAY + name, inputs, [stage], node.buffer, node.path)
    return spec


def _relay_kind(channel: Channel, digest: Callable[[Any], Any] | None) -> StageKind:
    async def relay(source: AsyncIterator[Any], params: RelayParams, ctx: Any) -> AsyncIterator[Any]:
        async for item in source:
            await channel.put(params.to, digest(item) if digest is not None else item)
            yield item

    return StageKind("relay", RelayParams, relay, (object,), None, fan_in=True, spans=False)


def renamed(row: dict[str, Any]) -> dict[str, Any]:
    """A shard's ledger row with its relays named as the driver nodes they
    stand for (what the driver's nodes read as their ledger, and run.json)."""
    records = row["records"]
    for key in ("expected", "written", "unaccounted"):
        if isinstance(records.get(key), dict):
            records[key] = {k.removeprefix(RELAY): v for k, v in records[key].items()}
    return row


class Spool:
    """What one shard relayed, in a file, as it arrives: pickled lists of
    (driver node, item). Items of a process other than the last one that
    sent are dropped (see the module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.token: str | None = None  # the mark of the process whose items it holds
        self.items = self.processes = 0
        self.status: dict[str, Any] | None = None  # the shard's newest (flow.status.Status, as JSON data)
        self.broken = ""  # why pulling ended before the shard's channel did
        self._file: BinaryIO | None = None

    def add(self, token: str, items: list[tuple[str, Any]]) -> None:
        """Keep `items`, sent by the process marked `token`. A file that cannot
        be written makes the spool broken (the run's report says so); what
        comes after is still taken from the shard, so that it never waits."""
        try:
            if token != self.token:  # a first pull, or a process started again: its part runs from the start
                self.close()
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("wb")
                self.token, self.items, self.processes = token, 0, self.processes + 1
            if self._file is not None:
                pickle.dump(items, self._file, protocol=pickle.HIGHEST_PROTOCOL)
                self.items += len(items)
        except OSError as exc:
            self.broken = self.broken or f"the spool could not be written ({exc})"
            self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def read(self, to: str) -> Iterator[Any]:
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            while True:
                try:
                    items = pickle.load(f)
                except EOFError:
                    return
                yield from (item for node, item in items if node == to)

    def discard(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):  # the spools' directory, once it is empty
            self.path.parent.rmdir()


async def pull(
    actor: Any, spool: Spool, said: Callable[[str], None] | None = None, tries: int = PULL_TRIES,
    backoff: float = 0.1,
) -> None:  # fmt: skip
    """Take what a shard relays until its channel ends, or its actor is gone
    for good (a death past its restarts, a second Ctrl-C); an actor that is
    only unavailable for a while is asked again, `tries` times in a row.
    The lines the shard says go to `said` as they come."""
    failed = 0
    while True:
        try:
            token, items, ended = await actor.pull.remote(PULL)
        except Exception as exc:
            failed += 1
            if failed < tries and _passing(exc):
                await asyncio.sleep(backoff * 2**failed)
                continue
            first = str(exc).splitlines()[0] if str(exc) else ""
            spool.broken = spool.broken or f"{type(exc).__name__}: {first}"
            spool.close()
            return
        failed = 0
        statuses = [item for to, item in items if to == STATUS]
        if statuses:
            spool.status = statuses[-1]
        for text in (item for to, item in items if to == SAY and said is not None):
            said(text)
        spool.add(token, [(to, item) for to, item in items if to not in (STATUS, SAY)])
        if ended:
            spool.close()
            return


def _passing(exc: BaseException) -> bool:
    """Ray's ActorUnavailableError (the actor may answer again soon), by name:
    the engine imports Ray only to start a cluster."""
    return any(kind.__name__ == "ActorUnavailableError" for kind in type(exc).__mro__)


async def publish(runtime: Any, channel: Channel, every: float = EVERY) -> None:
    """Offer the shard's status every `every` seconds until cancelled, and once
    more then: its nodes' counters (pages, records: the ledger's figures)."""
    import msgspec

    from .status import View

    view = View(runtime)
    try:
        while True:
            await channel.offer(msgspec.to_builtins(view.status()))
            await asyncio.sleep(every)
    finally:
        view.ended = True
        await channel.offer(msgspec.to_builtins(view.status()))


class GatherParams(Params):
    to: str


def driver_part(spec: Spec, spools: list[Spool]) -> Spec:
    """The driver's part: its nodes, each reading one source node that
    yields what the shards relayed to it."""
    kind = StageKind("gather", GatherParams, _gathered(spools), None, object)
    nodes = {}
    for name in driver_nodes(spec):
        node = spec.nodes[name]
        source = StageSpec(kind, GatherParams(to=name), node.path)
        nodes[GATHER + name] = Node(GATHER + name, [], [source], node.buffer, node.path)
        nodes[name] = Node(name, [GATHER + name], node.stages, node.buffer, node.path, node.has_buffer)
    spec.nodes = nodes
    return spec


def _gathered(spools: list[Spool]) -> Callable[..., AsyncIterator[Any]]:
    async def gather(source: None, params: GatherParams, ctx: Any) -> AsyncIterator[Any]:
        for spool in spools:
            for item in spool.read(params.to):
                yield item

    return gather


class _Ledgers:
    """The driver part's ledgers, answering for the shards' sources with
    the rows the shards sent (copies: a reader may change its row)."""

    def __init__(self, inner: Any, rows: dict[str, Any]) -> None:
        self._inner, self._rows = inner, rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def row(self, source: str, counters: Any, sink: str | None = None) -> dict[str, Any]:
        if source in self._rows:
            return copy.deepcopy(self._rows[source])
        return self._inner.row(source, counters, sink)  # type: ignore[no-any-return]


def install(runtime: Any, spec: Spec, reports: list[dict[str, Any]], began: float, status: str) -> None:
    """Give the driver part the shards' view of the run: `reports` are the
    shards' that reported (their ledgers, renamed, and their `figures`),
    `began` the cluster run's wall time at its start (the first shard's
    start counts instead: the report's second 0, as in a run in one
    process), `spec` the whole graph (whose sources reach each node)."""
    from .graph import edges
    from .topology import sources_upstream

    state = runtime.resources
    figures = [report["figures"] for report in reports]
    began = min((shard["began"] for shard in figures), default=began)  # the first shard's start: second 0
    upstream = sources_upstream(spec.nodes, edges(spec))
    for name in driver_nodes(spec):
        state.sources[name] = upstream.get(name, [])
    rows = {source: row for report in reports for source, row in report["ledger"].items()}
    for shard in figures:
        for node, counts in shard["counters"].items():
            mine = state.counters[node]
            for counter, n in counts.items():
                mine[counter] += n
        offset = max(0, round(shard["began"] - began))  # its seconds, on the cluster run's clock
        for series, key, counts in shard["timeline"]:
            merged = state.timeline.setdefault((series, key), [])
            merged.extend([0] * (offset + len(counts) - len(merged)))
            for i, n in enumerate(counts):
                merged[offset + i] += n
        for name, attrs, value in shard["gauges"]:
            state.gauges[(name, tuple(map(tuple, attrs)))] = value
        state.events.extend(shard["events"])
    state.events.sort(key=lambda e: e.get("timestamp", ""))
    state.ledgers = _Ledgers(state.ledgers, rows)
    if status != "completed":
        state.stopped = status
    runtime.began_before = max(0.0, time.time() - began)


def figures(runtime: Any, began: float) -> dict[str, Any]:
    """A shard's view of its run besides its ledger, for the driver's nodes
    (`install`); plain data: it crosses to the driver."""
    state = runtime.resources
    return {
        "counters": {node: dict(counts) for node, counts in state.counters.items()},
        "timeline": [(series, key, list(counts)) for (series, key), counts in state.timeline.items()],
        "gauges": [(name, list(attrs), value) for (name, attrs), value in state.gauges.items()],
        "events": list(state.events),
        "began": began,
    }
