"""The runtime: delivery over random DAGs, backpressure, error isolation,
and stopping that drains what is in flight."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from aiostream import streamcontext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flow.graph import check
from flow.registry import ANY, SAME, ConcurrentParams, Params, Registry, default_registry, stage
from flow.runtime import Runtime
from flow.spec import parse_spec
from flow.testing import list_kinds


class NoParams(Params):
    pass


class FailParams(Params):
    after: int = 2  # fail when this many items have passed


PROBES: dict[str, Any] = {}


@stage("probe", NoParams, consumes=ANY, produces=None)
async def probe(source: AsyncIterator[Any], params: NoParams, ctx: Any) -> AsyncIterator[Any]:
    """A slow sink: hands control back to the loop several times per item and
    records how far the source is ahead of it."""
    runtime, source_node = PROBES["runtime"], PROBES["source"]
    seen = 0
    async with streamcontext(source) as items:
        async for item in items:
            produced = runtime.stats[source_node].stages[0].items_out
            PROBES["lags"].append(produced - seen)
            seen += 1
            for _ in range(5):
                await asyncio.sleep(0)
            yield item


@stage("fail", FailParams, consumes=ANY, produces=SAME)
async def fail(source: AsyncIterator[Any], params: FailParams, ctx: Any) -> AsyncIterator[Any]:
    """Pass items on, then raise."""
    async with streamcontext(source) as items:
        n = 0
        async for item in items:
            if n == params.after:
                raise ValueError(f"broken after {n} items")
            n += 1
            yield item


SINKS: dict[str, list[Any]] = {}  # what reached each node ending in `testing_sink`


def registry() -> Registry:
    base = default_registry(plugins=False)
    return Registry([base[name] for name in base.names()] + [probe, fail, *list_kinds({}, SINKS)])


def run(spec: Any, out_dir: Any) -> Any:
    SINKS.clear()
    return asyncio.run(Runtime(spec, out_dir=out_dir).run())


def load(text: str) -> Any:
    spec = parse_spec(text, registry(), env={})
    assert check(spec) == []
    return spec


# --- random DAGs -------------------------------------------------------------
@st.composite
def dags(draw: Any) -> tuple[str, dict[str, list[str]], dict[str, int]]:
    """A random DAG in YAML: sources first, every other node reads from a
    non-empty set of earlier nodes; nodes nobody reads end in a sink."""
    n_sources = draw(st.integers(1, 3))
    n_nodes = draw(st.integers(n_sources, 8))
    names = [f"n{i}" for i in range(n_nodes)]
    inputs: dict[str, list[str]] = {}
    items: dict[str, int] = {}
    for i, name in enumerate(names):
        if i < n_sources:
            inputs[name] = []
            items[name] = draw(st.integers(0, 40))
        else:
            inputs[name] = sorted(draw(st.sets(st.sampled_from(names[:i]), min_size=1, max_size=3)))
    read = {source for ins in inputs.values() for source in ins}
    lines = ["version: 1", "nodes:"]
    for name in names:
        buffer = draw(st.integers(1, 4))
        sink = [] if name in read else ["testing_sink"]
        if inputs[name]:
            pipe = ["merge", *sink]
            lines.append(f"  {name}: {{from: [{', '.join(inputs[name])}], buffer: {buffer}, pipe: {pipe}}}")
        else:
            batch = draw(st.integers(1, 7))
            first = f"{{sequence: {{items: {items[name]}, batch: {batch}}}}}"
            lines.append(f"  {name}: {{pipe: [{', '.join([first, *sink])}]}}")
    return "\n".join(lines) + "\n", inputs, items


def paths(inputs: dict[str, list[str]], source: str, target: str) -> int:
    if source == target:
        return 1
    return sum(paths(inputs, source, up) for up in inputs[target])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dag=dags())
def test_every_item_reaches_every_downstream_sink_once_per_path(tmp_path_factory, dag):
    """Bag semantics: a sink sees each record once per path from its source
    (exactly once when the path is unique, as in every tree)."""
    text, inputs, items = dag
    spec = load(text)
    SINKS.clear()
    runtime = Runtime(spec, out_dir=tmp_path_factory.mktemp("out"))
    result = asyncio.run(runtime.run())
    assert result.status == "completed" and result.errors == []
    sinks = [name for name, node in spec.nodes.items() if node.stages[-1].kind.is_sink]
    for sink in sinks:
        got = Counter((r["source"], r["n"]) for batch in SINKS.get(sink, []) for r in batch)
        expected = Counter(
            {(src, n): paths(inputs, src, sink) for src, count in items.items() for n in range(count)}
        )
        expected = +expected  # drop sources that do not reach this sink
        assert got == expected, (sink, text)
    for stats in runtime.buffer_statistics().values():
        assert stats.fill == 0 and stats.producers == 0


# --- backpressure ------------------------------------------------------------
def test_a_slow_sink_holds_the_source_back(tmp_path):
    #   src --[cap 4]--> mid --[cap 2]--> out(probe)
    # The source may run ahead of the sink by the buffers' capacities plus one
    # item in hand per node, never more, however many items there are.
    spec = load(
        "version: 1\nnodes:\n"
        "  src: {pipe: [{sequence: {items: 3000, batch: 1}}]}\n"
        "  mid: {from: src, buffer: 4, pipe: [merge]}\n"
        "  out: {from: mid, buffer: 2, pipe: [probe]}\n"
    )
    runtime = Runtime(spec, out_dir=tmp_path)
    PROBES.update(runtime=runtime, source="src", lags=[])
    result = asyncio.run(runtime.run())
    assert result.status == "completed"
    capacities = 4 + 2
    in_hand = 3  # src's item being put, mid's item being put, the probe's item
    assert len(PROBES["lags"]) == 3000
    assert max(PROBES["lags"]) <= capacities + in_hand
    assert max(PROBES["lags"]) >= capacities  # the buffers did fill: backpressure was exercised


# --- errors ------------------------------------------------------------------
def test_a_failing_branch_is_recorded_and_the_others_complete(tmp_path):
    spec = load(
        "version: 1\nnodes:\n"
        "  src: {pipe: [{sequence: {items: 100, batch: 10}}]}\n"
        "  bad: {from: src, pipe: [{fail: {after: 3}}, testing_sink]}\n"
        "  good: {from: src, pipe: [testing_sink]}\n"
    )
    result = run(spec, tmp_path)
    assert result.status == "completed"
    assert [(e["node"], e["stage"], e["item"], e["error"], e["detail"]) for e in result.errors] == [
        ("bad", "fail", 4, "ValueError", "broken after 3 items")  # it failed on the 4th batch it took
    ]
    assert sum(len(batch) for batch in SINKS["good"]) == 100
    assert len(SINKS["bad"]) == 3
    # Accounting: what bad took = what passed + the one it failed on + what it dropped.
    assert result.nodes["bad"].dropped == 10 - 3 - 1
    report = msgspec.json.decode(msgspec.json.encode(result.report()))
    assert report["nodes"]["bad"]["stages"][0] == {"stage": "fail", "items_out": 3, "errors": 1}


# --- stopping ----------------------------------------------------------------
class StopParams(Params):
    at: int = 50


@stage("stopper", StopParams, consumes=ANY, produces=None)
async def stopper(source: AsyncIterator[Any], params: StopParams, ctx: Any) -> AsyncIterator[Any]:
    """A sink that asks the runtime to stop after `at` items."""
    async with streamcontext(source) as items:
        n = 0
        async for item in items:
            n += 1
            if n == params.at:
                PROBES["runtime"].stop("interrupted")
            yield item


def test_stop_drains_in_flight_items_and_loses_none(tmp_path):
    base = registry()
    reg = Registry([base[name] for name in base.names()] + [stopper])
    spec = parse_spec(
        "version: 1\nnodes:\n"
        "  src: {buffer: 5, pipe: [{sequence: {items: 100000, batch: 1}}]}\n"
        "  out: {from: src, buffer: 5, pipe: [{stopper: {at: 50}}]}\n",
        reg,
        env={},
    )
    runtime = Runtime(spec, out_dir=tmp_path)
    PROBES.update(runtime=runtime)
    result = asyncio.run(runtime.run())
    assert result.status == "interrupted"
    produced = result.nodes["src"].stages[0].items_out
    consumed = result.nodes["out"].stages[0].items_out
    assert 50 <= produced < 100000
    assert consumed == produced  # everything the source yielded reached the sink


def test_deadline_stops_and_reports(tmp_path):
    spec = load(
        "version: 1\nrun: {deadline: 200ms, grace: 2s}\nnodes:\n"
        "  src: {pipe: [{sequence: {items: 100000000, batch: 1}}]}\n"
        "  out: {from: src, pipe: [collect]}\n"
    )
    result = asyncio.run(Runtime(spec, out_dir=tmp_path).run())
    assert result.status == "deadline"
    assert [e["error"] for e in result.errors] == ["deadline_exceeded"]
    assert result.nodes["src"].stages[0].items_out == result.nodes["out"].stages[0].items_out > 0


def test_stage_kinds_compose_as_aiostream_operators_with_the_engines_result(tmp_path):
    """The same chain, once through the engine and once as aiostream pipes."""
    from aiostream import stream

    from stages.generic.collect import CollectParams
    from stages.generic.merge import MergeParams
    from stages.generic.sequence import SequenceParams

    reg = default_registry(plugins=False)

    class Ctx:
        node = "a"

    params = SequenceParams(items=45, batch=7)
    piped = (
        reg["sequence"].operator(Ctx())(params)
        | reg["merge"].operator(Ctx()).pipe(MergeParams())
        | reg["collect"].operator(Ctx()).pipe(CollectParams())
    )

    async def collect_all() -> list[Any]:
        return await stream.list(piped)

    via_aiostream = asyncio.run(collect_all())
    spec = load("version: 1\nnodes:\n  a: {pipe: [{sequence: {items: 45, batch: 7}}, merge, testing_sink]}\n")
    run(spec, tmp_path)
    assert via_aiostream == SINKS["a"]
    assert sum(map(len, via_aiostream)) == 45


# --- per-item stages ---------------------------------------------------------
class WorkParams(ConcurrentParams):
    steps: int = 3  # times each item hands control back to the loop


IN_FLIGHT = {"now": 0, "max": 0}


@stage("work", WorkParams, consumes=ANY, produces=SAME, per_item=True)
async def work(item: Any, params: WorkParams, ctx: Any) -> Any:
    """Tag each record, yielding to the loop in between (a stand-in for I/O)."""
    IN_FLIGHT["now"] += 1
    IN_FLIGHT["max"] = max(IN_FLIGHT["max"], IN_FLIGHT["now"])
    try:
        # Later items finish sooner, so unordered output differs from input order.
        for _ in range(params.steps + 10 * (7 - item[0]["n"] % 7)):
            await asyncio.sleep(0)
        return [{**r, "worked": True} for r in item]
    finally:
        IN_FLIGHT["now"] -= 1


def per_item_registry() -> Registry:
    base = registry()
    return Registry([base[name] for name in base.names()] + [work])


@settings(max_examples=20, deadline=None)
@given(concurrency=st.integers(1, 8), ordered=st.booleans(), items=st.integers(0, 60))
def test_per_item_stages_never_exceed_their_concurrency(tmp_path_factory, concurrency, ordered, items):
    spec = parse_spec(
        "version: 1\nnodes:\n  a:\n    pipe:\n"
        f"      - sequence: {{items: {items}, batch: 1}}\n"
        f"      - work: {{concurrency: {concurrency}, ordered: {str(ordered).lower()}}}\n"
        "      - testing_sink\n",
        per_item_registry(),
        env={},
    )
    IN_FLIGHT.update(now=0, max=0)
    result = run(spec, tmp_path_factory.mktemp("o"))
    assert (result.status, result.errors) == ("completed", [])
    out = [batch[0]["n"] for batch in SINKS.get("a", [])]
    assert sorted(out) == list(range(items))
    assert all(batch[0]["worked"] for batch in SINKS.get("a", []))
    assert IN_FLIGHT["max"] <= concurrency  # never exceeded...
    if items >= 3 * concurrency:
        assert IN_FLIGHT["max"] == concurrency  # ...and used, given enough work
    if ordered or concurrency == 1:
        assert out == list(range(items))
    elif concurrency > 1 and items > 7:
        assert out != list(range(items))  # unordered really lets later items overtake


def test_a_per_item_stage_needs_concurrent_params():
    with pytest.raises(TypeError, match="needs params derived from ConcurrentParams"):
        stage("bad", NoParams, consumes=ANY, produces=SAME, per_item=True)(work.run)


def test_the_deadline_stops_a_source_that_a_concurrent_per_item_stage_pulls(tmp_path):
    """aiostream's map pulls the source from a task of its own; the stop must
    cancel that task's wait, so the run drains at once instead of running
    into `run.grace`."""
    from flow.testing import run_graph

    @stage("forever", NoParams, consumes=None, produces=ANY)
    async def forever(source: None, params: NoParams, ctx: Any) -> AsyncIterator[Any]:
        """One item, then wait for ever."""
        yield [{"n": 0}]
        await asyncio.Event().wait()

    for concurrency in (1, 4):
        graph = (
            "version: 1\nrun: {deadline: 1s, grace: 30s}\nnodes:\n"
            f"  a: {{pipe: [forever, {{work: {{concurrency: {concurrency}, steps: 0}}}}, testing_sink]}}\n"
        )
        sinks: dict[str, list[Any]] = {}
        result = run_graph(graph, kinds=[forever, work], sinks=sinks, out_dir=tmp_path, virtual=True)
        assert (result.status, [e["error"] for e in result.errors]) == ("deadline", ["deadline_exceeded"])
        assert len(sinks["a"]) == 1 and sinks["a"][0][0]["worked"]  # what was in flight drained


def test_the_grace_period_starts_at_the_stop_not_at_the_deadline(tmp_path):
    """A stop (Ctrl-C) while a stage hangs on an item: the run ends one grace
    period after the stop, not at the deadline."""

    @stage("hang", WorkParams, consumes=ANY, produces=SAME, per_item=True)
    async def hang(item: Any, params: WorkParams, ctx: Any) -> Any:
        """Take an item and never finish it (a request that hangs)."""
        await asyncio.sleep(3600)
        return item

    spec = parse_spec(
        "version: 1\nrun: {deadline: 10m, grace: 2s}\nnodes:\n"
        "  a: {pipe: [{sequence: {items: 5, batch: 1}}, hang, testing_sink]}\n",
        Registry([*(registry()[n] for n in registry().names()), hang]),
        env={},
    )

    async def main() -> tuple[Any, float]:
        loop = asyncio.get_running_loop()
        runtime = Runtime(spec, out_dir=tmp_path)
        loop.call_later(1.0, runtime.stop, "interrupted")
        started = loop.time()
        result = await runtime.run()
        return result, loop.time() - started

    from flow.testing import run_virtual

    result, took = run_virtual(main())
    assert result.status == "interrupted"
    assert [e["error"] for e in result.errors] == ["grace_exceeded"]
    assert 3.0 <= took <= 4.0 + 1e-6  # the stop at 1 s, 2 s of grace, at most 1 s for the sinks


def test_one_failing_item_is_an_error_record_and_the_stage_goes_on(tmp_path):
    """A per-item stage raising on one item: that item is an error record,
    the others pass; ten failures in a row end the branch."""
    from flow.mapping import MAX_FAILURES_IN_A_ROW

    @stage("picky", WorkParams, consumes=ANY, produces=SAME, per_item=True)
    async def picky(item: Any, params: WorkParams, ctx: Any) -> Any:
        """Fail on item 3, and on every item from 20 on."""
        n = item[0]["n"]
        if n == 3 or n >= 20:
            raise ValueError(f"cannot take item {n}")
        return item

    spec = parse_spec(
        "version: 1\nnodes:\n  a: {pipe: [{sequence: {items: 40, batch: 1}}, picky, testing_sink]}\n",
        Registry([*(registry()[n] for n in registry().names()), picky]),
        env={},
    )
    result = run(spec, tmp_path)
    assert [batch[0]["n"] for batch in SINKS["a"]] == [n for n in range(20) if n != 3]
    errors = [(e["stage"], e["error"], e["detail"]) for e in result.errors]
    assert errors[0] == ("picky", "ValueError", "cannot take item 3 (the stage went on with the next item)")
    assert len(errors) == 1 + MAX_FAILURES_IN_A_ROW  # the tenth failure in a row ended the branch
    assert errors[-1] == ("picky", "ValueError", f"cannot take item {20 + MAX_FAILURES_IN_A_ROW - 1}")
    assert result.nodes["a"].stages[1].errors == 1  # the branch ended once


def test_each_node_knows_the_sources_upstream_of_it():
    from flow.graph import edges
    from flow.topology import sources_upstream as _sources_upstream

    spec = load(
        "version: 1\nnodes:\n"
        "  a: {pipe: [sequence]}\n  b: {pipe: [sequence]}\n  c: {pipe: [sequence, collect]}\n"
        "  ab: {from: [a, b], pipe: [merge]}\n"
        "  only_a: {from: [a, '*.errors'], pipe: [collect]}\n"
        "  all: {from: ab, pipe: [collect]}\n"
    )
    upstream = _sources_upstream(spec.nodes, edges(spec))
    assert upstream["all"] == ["a", "b"] and upstream["ab"] == ["a", "b"]
    assert upstream["only_a"] == ["a"]  # side outputs (errors of b, c, ...) carry no records
    assert upstream["c"] == ["c"]


@pytest.mark.parametrize("ordered", [False, True])
def test_a_per_item_stage_keeps_its_concurrency_busy_while_its_consumer_works(ordered):
    """400 calls of 100 ms at concurrency 8, a consumer that spends 5 ms on
    each result (it could take 20 per 100 ms; 8 arrive): the calls keep 8
    running on average (>= 7.9, time-weighted), so the whole takes 5 s, not
    the 7 s of a map that starts the next call only while its consumer asks
    (aiostream's: 5.7 running on average). Virtual time."""
    from types import SimpleNamespace

    from flow.mapping import mapped
    from flow.testing import run_virtual

    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        running, area, last = 0, 0.0, loop.time()

        def step(by: int) -> None:
            nonlocal running, area, last
            area, last, running = area + running * (loop.time() - last), loop.time(), running + by

        async def source() -> AsyncIterator[int]:
            for i in range(400):
                yield i

        async def call(item: int, params: Any, ctx: Any) -> int:
            step(+1)
            await asyncio.sleep(0.1)
            step(-1)
            return item

        started, seen = loop.time(), []
        params = SimpleNamespace(in_flight=8, ordered=ordered)
        async for result in mapped(source(), call, params, SimpleNamespace()):
            seen.append(result)
            await asyncio.sleep(0.005)
        assert sorted(seen) == list(range(400)) and (seen == sorted(seen) or not ordered)
        elapsed = loop.time() - started
        return area / elapsed, elapsed

    average, elapsed = run_virtual(main())
    assert average >= 7.9 and elapsed <= 5.1


class _Item:
    """An item that notes when the engine abandons it."""

    def __init__(self, n: int, abandoned: list[int]) -> None:
        self.n, self._abandoned = n, abandoned

    def abandon(self, reason: str) -> None:
        self._abandoned.append(self.n)


class _Taken:
    """A source of `count` items that counts what was taken and abandoned."""

    def __init__(self, count: int) -> None:
        self.count, self.taken, self.abandoned = count, 0, list[int]()

    async def source(self) -> AsyncIterator[_Item]:
        for i in range(self.count):
            self.taken += 1
            yield _Item(i, self.abandoned)


def test_closing_a_concurrent_stage_cancels_its_calls_and_abandons_what_it_held():
    """The consumer stops after 3 results: every call still running is
    cancelled, and every item taken from the input but not passed on is
    abandoned (so a planner waiting for it stops waiting)."""
    from types import SimpleNamespace

    from flow.mapping import mapped
    from flow.testing import run_virtual

    items = _Taken(100)

    async def main() -> list[int]:
        running = 0

        async def call(item: _Item, params: Any, ctx: Any) -> int:
            nonlocal running
            running += 1
            try:
                await asyncio.sleep(0.1 * (item.n % 4 + 1))
            finally:
                running -= 1
            return item.n

        got = []
        results = mapped(items.source(), call, SimpleNamespace(in_flight=4, ordered=False), SimpleNamespace())
        async for n in results:
            got.append(n)
            if len(got) == 3:
                break
        await results.aclose()  # type: ignore[attr-defined]
        assert running == 0  # closed at once, not later by the loop's generator finalizer
        return got

    got = run_virtual(main())
    assert len(got) == 3 and sorted(items.abandoned + got) == list(range(items.taken))  # passed on or abandoned


@pytest.mark.parametrize("ordered", [False, True])
def test_a_consumer_cancelled_mid_stream_loses_no_item_silently(ordered):
    """Cancelled while calls run, finish, or wait to start: every item taken
    from the input is passed on or abandoned, none both, none neither."""
    from types import SimpleNamespace

    from flow.mapping import mapped
    from flow.testing import run_virtual

    items = _Taken(50)

    async def main() -> list[int]:
        got: list[int] = []

        async def call(item: _Item, params: Any, ctx: Any) -> int:
            await asyncio.sleep(0.1 * (item.n % 3 + 1))
            return item.n

        async def consume() -> None:
            params = SimpleNamespace(in_flight=4, ordered=ordered)
            async for n in mapped(items.source(), call, params, SimpleNamespace()):
                got.append(n)
                await asyncio.sleep(0.05)

        consumer = asyncio.ensure_future(consume())
        await asyncio.sleep(0.31)
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        return got

    got = run_virtual(main())
    abandoned, taken = items.abandoned, items.taken
    assert sorted(abandoned + got) == list(range(taken)) and not set(abandoned) & set(got)


def test_at_run_end_callbacks_get_the_run_facts_and_a_failing_one_is_an_error(tmp_path):
    from flow.registry import ANY, Params, stage
    from flow.testing import run_graph

    seen: list[dict] = []

    class EnderParams(Params):
        """No parameters."""

    @stage("ender", EnderParams, consumes=ANY, produces=None)
    async def ender(source, params, ctx):
        """Register two callbacks: one fails, the other keeps what it gets."""

        def boom(run):
            raise RuntimeError("nope")

        async def keep(run):
            seen.append(run)

        ctx.at_run_end(boom)
        ctx.at_run_end(keep)
        async for item in source:
            yield item

    graph = "version: 1\nnodes:\n  a: {pipe: [{sequence: {items: 3}}, ender]}\n"
    result = run_graph(graph, kinds=[ender], out_dir=tmp_path)
    (run,) = seen  # the failing callback did not keep the next one from running
    assert run["status"] == "completed" and run["lost"] == result.lost and run["ledger"] == result.ledger
    assert run["run_id"] and run["graph"] and run["started_at"] <= run["finished_at"]
    assert [e["detail"] for e in result.errors if e["error"] == "at_run_end_failed"] == ["RuntimeError: nope"]


def test_an_at_run_end_callback_that_hangs_is_cut_at_the_grace(tmp_path):
    import asyncio

    from flow.registry import ANY, Params, stage
    from flow.testing import run_graph

    class HangParams(Params):
        """No parameters."""

    @stage("hang_at_end", HangParams, consumes=ANY, produces=None)
    async def hang_at_end(source, params, ctx):
        """Register a callback that never finishes."""
        ctx.at_run_end(lambda run: asyncio.Event().wait())
        async for item in source:
            yield item

    graph = "version: 1\nrun: {grace: 3s}\nnodes:\n  a: {pipe: [{sequence: {items: 2}}, hang_at_end]}\n"
    result = run_graph(graph, kinds=[hang_at_end], out_dir=tmp_path, virtual=True)
    (failure,) = [e["detail"] for e in result.errors if e["error"] == "at_run_end_failed"]
    assert "still running after 3 s (run.grace)" in failure and result.status == "completed"
