"""Testing helpers that ship with flow: lists in and out of a graph, and an
event loop on virtual time.

    sinks = {}
    result = run_graph(GRAPH, sources={"items": [1, 2, 3]}, sinks=sinks)
    assert sinks["out"] == [...]     # what reached the node ending in `testing_sink`

`testing_source: {name: items}` emits the items of `sources["items"]`;
`testing_sink` appends what reaches it to `sinks[NODE]` (both registered
beside the installed kinds by `run_graph`; `list_kinds(...)` gives them
for a Registry of your own). `run_graph(..., virtual=True)` runs on virtual
time.

`run_virtual(coro)` runs a coroutine on a loop whose clock only moves when
every task is waiting for a timer (none for work in an executor thread,
`run_in_executor`): then it jumps straight to the next timer.
A test of a 30 s backoff or a minute of rate-limited requests takes
microseconds, and timings are exact and repeatable. Real loopback sockets
work too: before jumping to the next timer the loop gives pending I/O 2 ms of
real time, so in-process servers (the mocks, with `LoopClock`) and clients
share one virtual clock. Waiting on I/O with no timer pending polls in 2 ms
real steps.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import AsyncIterator, Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .registry import ANY, Params, Registry, StageKind, default_registry, stage

T = TypeVar("T")


class TestingSourceParams(Params):
    name: str  # the key of the list in `sources`


class TestingSinkParams(Params):
    """No parameters."""


def list_kinds(sources: Mapping[str, list[Any]], sinks: dict[str, list[Any]]) -> list[StageKind]:
    """`testing_source` over `sources` and `testing_sink` into `sinks`."""

    @stage("testing_source", TestingSourceParams, consumes=None, produces=ANY)
    async def testing_source(source: None, params: TestingSourceParams, ctx: Any) -> AsyncIterator[Any]:
        """Emit the items of the named test list."""
        for item in sources[params.name]:
            yield item

    @stage("testing_sink", TestingSinkParams, consumes=ANY, produces=None, fan_in=True)
    async def testing_sink(source: AsyncIterator[Any], params: Any, ctx: Any) -> AsyncIterator[Any]:
        """Append every item to the test's list for this node."""
        kept = sinks.setdefault(ctx.node, [])
        async for item in source:
            kept.append(item)
            yield item

    return [testing_source, testing_sink]


def run_graph(
    text: str,
    *,
    sources: Mapping[str, list[Any]] | None = None,
    sinks: dict[str, list[Any]] | None = None,
    kinds: list[StageKind] | None = None,
    out_dir: str | Path | None = None,
    refs: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    virtual: bool = False,
    plugins: bool = False,
    journal: Any = None,
) -> Any:
    """Parse, check (errors raise AssertionError) and run a graph; the
    RunResult. `kinds`: more stage kinds beside flow's own (and, with
    `plugins`, those of other installed distributions); `journal`: the
    run's flow.journal.Journal (none by default)."""
    from .graph import check
    from .runtime import Runtime
    from .spec import parse_spec

    sinks = {} if sinks is None else sinks
    registry = Registry([*_installed(plugins), *list_kinds(sources or {}, sinks), *(kinds or [])])
    spec = parse_spec(text, registry, env={} if env is None else env, refs=refs)
    errors = [spec.where(p) for p in check(spec) if not p.warning]
    assert not errors, "\n".join(errors)
    runtime = Runtime(spec, out_dir=out_dir, journal=journal)
    return run_virtual(runtime.run()) if virtual else asyncio.run(runtime.run())


def _installed(plugins: bool) -> list[StageKind]:
    registry = default_registry(plugins=plugins)
    return [registry[name] for name in registry.names()]


class _VirtualSelector(selectors.DefaultSelector):
    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        # The loop asks to block for `timeout` (until its next timer). First
        # give real I/O in flight (loopback: microseconds) a brief real chance,
        # so a response is not pushed past a timer; then, with nothing ready,
        # move the clock to that timer instead of waiting for it.
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if self._loop.in_threads:  # work in an executor: the clock waits for it
            return super().select(0.002)
        if len(self.get_map()) > 1:  # sockets besides the loop's own wake-up pipe
            ready = super().select(0.002)
            if ready:
                return ready
        if timeout is not None:
            self._loop.advance(timeout)
        return super().select(0)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self.in_threads = 0  # run_in_executor calls not done yet
        super().__init__(selector=_VirtualSelector(self))

    def run_in_executor(self, executor: Any, func: Any, *args: Any) -> asyncio.Future[Any]:
        """As asyncio's; while the call runs, the clock does not jump to the
        next timer: work in a thread takes real time, not virtual time."""
        future = super().run_in_executor(executor, func, *args)
        self.in_threads += 1
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, future: asyncio.Future[Any]) -> None:
        self.in_threads -= 1

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


def run_virtual(coro: Coroutine[Any, Any, T], *, start: float = 0.0) -> T:
    """Run `coro` to completion on a fresh VirtualTimeLoop."""
    loop = VirtualTimeLoop(start)
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
