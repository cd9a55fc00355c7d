"""`flow test GRAPH`: run the graph offline on recorded traffic and check it.

Every page comes from the recording `flow run GRAPH --record DIR` wrote
(flow.tape); nothing is fetched, the graph's mocks are not started,
telemetry is off, and nodes whose sink writes over the network (a database
server) are left out: the run opens no network connection. Its outputs go
to a temporary directory (or `--out`), absolute paths included. A page the
recording lacks fails as `not_recorded` (and the test with it). Then the
`tests:` block is checked (flow.expect) and the output records compared
with the snapshot `DIR/snapshot.jsonl` (`--update` writes it). Exit 0:
every check held; 1: a check failed, shown as a diff; 2: bad usage or graph.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..registry import ANY, Params, StageKind, stage
from ._load import add_graph_arguments, load_checked
from ._output import Abort, info, out

if TYPE_CHECKING:
    from ..expect import TestsSpec
    from ..spec import Spec
    from ..tape import Tape

ERRORS_SHOWN = 5  # error records printed with a failed test


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_graph_arguments(parser)
    parser.add_argument("--fixtures", metavar="DIR", default="fixtures",
                        help="the recording (flow run GRAPH --record DIR; default: fixtures)")  # fmt: skip
    parser.add_argument("--update", action="store_true",
                        help="write DIR/snapshot.jsonl from this run's output records")  # fmt: skip
    parser.add_argument("--out", metavar="DIR", help="where the sinks write (default: a temporary directory)")


def run(args: argparse.Namespace) -> int:
    from ..expect import TestsSpec, canonical, check, plain, records_of
    from ..tape import Tape, TapeError

    spec = load_checked(args)  # checked with its ${mocks...} unfilled; then filled, never started:
    spec = load_checked(args, refs={name: f"http://{name}.mock.invalid" for name in spec.mocks})
    tests = spec.tests or TestsSpec()
    inputs = _output_inputs(spec, tests)
    try:
        tape = Tape(args.fixtures, "play", spec.secrets)
    except TapeError as err:
        raise Abort(str(err)) from None
    if not tape.exchanges:
        raise Abort(f"{args.fixtures}: the recording holds no exchanges (flow run {args.graph} --record DIR)")
    for name in _offline(spec):
        info(f"flow test: node '{name}' left out: its sink writes over the network")
    items: list[Any] = []
    with tempfile.TemporaryDirectory(prefix="flow-test-") as scratch:
        report = asyncio.run(_run(spec, Path(args.out or scratch), tape, inputs, items))
    records = [plain(r) for item in items for r in records_of(item)]
    failures = check(tests, report, records)
    if tape.missing:
        failures.append(f"recording: {len(tape.missing)} requests not recorded, e.g. {tape.missing[0][1]!r}")
    snapshot = canonical(records, tests.ignore)
    failures += _snapshot(Path(args.fixtures) / "snapshot.jsonl", snapshot, args.update)
    what = f"{len(records)} records of '{' + '.join(inputs)}'"
    name = os.path.basename(args.graph)
    if not failures:
        out(f"flow test {name}: passed: {what}, {tape.exchanges} exchanges played")
        return 0
    out(f"flow test {name}: FAILED ({len(failures)} checks), {what}")
    for failure in failures:
        out("  " + failure.replace("\n", "\n    "))
    errors = report["errors"]
    for error in errors[:ERRORS_SHOWN]:  # what the run itself reported, to tell why
        out(f"  error: {error['node']}/{error['stage']}: {error['error']}: {error['detail']}")
    if len(errors) > ERRORS_SHOWN:
        out(f"  ... {len(errors) - ERRORS_SHOWN} more errors")
    return 1


def _output_inputs(spec: Spec, tests: TestsSpec) -> list[str]:
    """The nodes whose records are checked: `tests.output`, or the main
    inputs of the graph's first sink node (in file order). Sources named in
    `tests.sources` must be nodes."""
    unknown = [s for s in tests.sources if s not in spec.nodes]
    if unknown:
        raise Abort(f"{spec.file}: tests.sources: no node {', '.join(map(repr, unknown))}"
                    f" (nodes: {', '.join(spec.nodes)})")  # fmt: skip
    if tests.output is not None:
        if tests.output not in spec.nodes:
            nodes = ", ".join(spec.nodes)
            raise Abort(f"{spec.file}: tests.output: no node '{tests.output}' (nodes: {nodes})")
        return [tests.output]
    for node in spec.nodes.values():
        main = [i for i in node.inputs if "." not in i and "*" not in i]
        if node.stages[-1].kind.is_sink and main:
            return main
    raise Abort(f"{spec.file}: tests.output: name the node whose records to check")


def _offline(spec: Spec) -> list[str]:
    """Leave out the nodes whose sink writes over the network; their names."""
    gone = [name for name, node in spec.nodes.items() if node.stages[-1].kind.network]
    for name in gone:
        del spec.nodes[name]
    return gone


async def _run(spec: Spec, out_dir: Path, tape: Tape, inputs: list[str], items: list[Any]) -> dict[str, Any]:
    """The graph on the recording, with a collector reading `inputs`."""
    from ..runtime import Runtime
    from ..spec import Node, StageSpec

    spec.telemetry = {"traces": "none", "metrics": "none"}  # the graph's choice beats the environment's
    collector = StageSpec(_collector(items), TestOutputParams(), ("tests",))
    spec.nodes["__test__"] = Node("__test__", inputs, [collector], 8, ("tests",))
    runtime = Runtime(spec, out_dir=out_dir)
    runtime.resources.tape = tape
    runtime.resources.confined = True  # absolute output paths land in out_dir too
    result = await runtime.run()
    del result.nodes["__test__"]
    return result.report()


def _snapshot(path: Path, snapshot: list[str], update: bool) -> list[str]:
    from ..expect import snapshot_diff

    # UTF-8 and "\n" only: a record's text may hold U+2028, which splitlines() would cut.
    if update:
        path.write_text("".join(line + "\n" for line in snapshot), encoding="utf-8")
        out(f"snapshot written: {path} ({len(snapshot)} records)")
        return []
    if not path.exists():
        out(f"no snapshot at {path}: `flow test --update` writes one")
        return []
    expected = path.read_text(encoding="utf-8").split("\n")[:-1]
    if expected == snapshot:
        return []
    diff = "\n".join(snapshot_diff(expected, snapshot))
    return [f"snapshot: the output records differ from {path} (--update accepts them):\n{diff}"]


class TestOutputParams(Params):
    """The collector `flow test` adds: no params."""


def _collector(items: list[Any]) -> StageKind:
    """A sink keeping every item that reaches it, in memory."""

    async def collect(source: AsyncIterator[Any], params: Any, ctx: Any) -> AsyncIterator[Any]:
        async for item in source:
            items.append(item)
        return
        yield  # an async generator that yields nothing: a sink

    kind = stage("test_output", TestOutputParams, consumes=ANY, produces=None, spans=False, fan_in=True)
    return kind(collect)
