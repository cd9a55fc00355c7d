"""`flow run GRAPH`: start the graph's mocks, run it, write the run report.

Ctrl-C (SIGINT) or SIGTERM stops the sources and lets what is in flight drain
to the sinks within `run.grace`; a second Ctrl-C cancels at once. Either way
the report (`OUT/run.json`) is written and the exit code is 130: a Ctrl-C
during start-up is held until the run has started, which then stops at once
(its reports say so), and one after the run ended leaves its report as it
is (see _signals). Reaching `run.deadline` drains the same way and exits 1."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ..items import utc_now
from ._load import add_graph_arguments, load_checked
from ._output import info, out
from ._signals import PRESSES, SIGNALS, stopper

TELEMETRY = """\
telemetry: OpenTelemetry traces and metrics go out over OTLP when
OTEL_EXPORTER_OTLP_ENDPOINT is set (e.g. http://localhost:4318; the other
standard OTEL_* variables apply), or as graph.yaml's `telemetry:` says
(traces/metrics: otlp|console|none, protocol: http/protobuf|grpc, endpoint).
Off by default. See docs/observability.md for the collector
and Jaeger."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = TELEMETRY
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_graph_arguments(parser)
    parser.add_argument("--out", metavar="DIR", help="output directory (default: run.out of the graph)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more detail")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="only errors")
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no live progress display (it is also off when stderr is not a terminal, or with -q)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the graph's last run if it did not complete (interrupted, failed, killed): "
        "the pages it fetched are taken from the state file (run.state), the rest fetched",
    )
    parser.add_argument(
        "--fail-on-error",
        action="store_true",
        help="exit 1 when anything was lost even if the graph says run.on_loss: warn",
    )
    parser.add_argument(
        "--cluster",
        metavar="local[:N]|ray://HOST:PORT",
        help="run the sources over N shards (default 2), each a Ray actor running flow's runtime, on a Ray "
        "cluster flow starts on this machine (on 127.0.0.1 only), or one that runs (its client server; "
        "shards: the graph's cluster: block); needs flow[ray]; outputs in OUT/shard-I/, the whole run's "
        "reports (report.html, run.json) in OUT/; not with --resume or --record",
    )
    parser.add_argument(
        "--record",
        metavar="DIR",
        help="write every page's HTTP exchange to DIR (one NODE.jsonl.gz per source, secrets "
        "redacted), for `flow test` to replay offline",
    )
    parser.add_argument(
        "--status-port",
        type=int,
        metavar="PORT",
        help="serve the run's live status (flow top URL) and taps (flow tap URL NODE) "
        "on 127.0.0.1:PORT while it runs (0: any free port; the URL goes to stderr); with --cluster, "
        "every shard's nodes and no taps",
    )


def write_json_atomically(path: Path, data: Any) -> None:
    import msgspec

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.json.format(msgspec.json.encode(data), indent=2) + b"\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


async def _run(
    args: argparse.Namespace, spec: Any, out_dir: Path, live: bool = False, state: Any = None,
    facts: dict[str, str] | None = None, journal: Any = None,
) -> Any:  # fmt: skip
    if spec.mocks:
        from mocks import serve  # the aiohttp server, only for a graph with mocks
    else:
        serve = _no_mocks

    from ..runtime import Runtime

    loop = asyncio.get_running_loop()
    async with serve(spec.mocks) as servers:
        if servers:  # their ports are known now: fill in ${mocks.NAME.url}
            spec = load_checked(args, refs={name: s.url for name, s in servers.items()})
        runtime = Runtime(spec, out_dir=out_dir, journal=journal)
        from ._status import serve_status  # (aiohttp only with --status-port)

        status = await serve_status(runtime, args.status_port)  # None without --status-port
        live_display = _equip(runtime, args, spec, live)
        if facts is not None:
            facts["run_id"] = runtime.telemetry.run_id
        # Recorded before anything is fetched: a kill leaves it `running`.
        mode = "resume" if journal is not None and journal.mode == "resume" else "run"
        _keep(state, "started", runtime.telemetry.run_id, _graph_id(spec), utc_now(), mode)
        task = asyncio.current_task()
        assert task is not None
        stop = stopper(runtime)
        for sig in SIGNALS:
            loop.add_signal_handler(sig, stop)
        if PRESSES.count:  # pressed during start-up: the run starts stopped, and drains at once
            runtime.stop("interrupted")
        display = None if live_display is None else asyncio.create_task(live_display.run(), name="progress")
        try:
            result = await runtime.run()
        finally:
            if runtime.resources.tape is not None:
                runtime.resources.tape.close()
            for sig in SIGNALS:
                loop.remove_signal_handler(sig)
            PRESSES.hold_again()  # until run.json is written
            if display is not None:
                display.cancel()
                await asyncio.gather(display, return_exceptions=True)
            if status is not None:  # the run has ended: so does its status server
                await status.close()
        from .progress import rows

        final_rows = rows(runtime)
    # Every task the run started has ended: nothing is left for asyncio.run
    # to cancel silently (a test interrupts runs and checks stderr is empty).
    pending = [t for t in asyncio.all_tasks() if t is not task and not t.done()]
    for leftover in pending:
        info(f"flow: warning: task still pending after the run: {leftover.get_name()}")
    return result, final_rows


def _equip(runtime: Any, args: argparse.Namespace, spec: Any, live: bool) -> Any:
    """What the command adds to the runtime: the recording (--record), and
    where choices made for the user (ctx.say) go as they are made: above
    the live display's table, or to stderr (none with -q). The live
    display (flow.cli.progress.Live), or None."""
    display = None
    if live:
        from .progress import Live, rows

        display = Live(lambda: rows(runtime))
    if not args.quiet:
        runtime.resources.announce = display.say if display is not None else info
    if args.record:
        from ..tape import Tape

        runtime.resources.tape = Tape(args.record, "record", spec.secrets)
    return display


@contextlib.asynccontextmanager
async def _no_mocks(specs: Any) -> AsyncIterator[dict[str, Any]]:
    yield {}


def _quiet_exporter_logs() -> None:
    """The OTLP exporters log every retry of an unreachable collector; flow
    says it once itself (flow.otlp, flow.metrics), as `flow: telemetry: ...`."""
    import logging

    logging.getLogger("opentelemetry.exporter").setLevel(logging.CRITICAL)
    logging.getLogger("opentelemetry.sdk.metrics").setLevel(logging.CRITICAL)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("flow: %(message)s"))
    flow_log = logging.getLogger("flow")
    flow_log.addHandler(handler)
    flow_log.propagate = False


def _status_line(spec: Any, result: Any, report: Path) -> str:
    """What happened, in records where the sources count them, and where it went."""
    totals: dict[str, int] = {}
    for counters in result.counters.values():
        for name in ("records", "products", "dead_letters", "duplicates"):
            totals[name] = totals.get(name, 0) + counters.get(name, 0)
    if totals.get("records"):
        what = (
            f"{totals['records']} records in, {totals['products']} products made, "
            f"{totals['dead_letters']} dead letters, {totals['duplicates']} duplicates dropped"
        )
    else:
        sinks = [name for name, node in spec.nodes.items() if node.stages[-1].kind.is_sink]
        items = sum(result.nodes[name].stages[-1].items_out for name in sinks)
        what = f"{items} items reached {len(sinks)} sinks"
    resumed = sum(row["pages"].get("from_state", 0) for row in result.ledger.values())
    if resumed:
        what += f", {resumed} pages taken from the run resumed"
    outputs = "".join(f"{path}, " for path in result.outputs)
    return (
        f"{result.status}: {what}; {len(result.errors)} errors in {result.seconds:.2f}s; "
        f"outputs: {outputs}{report}"
    )


def _graph_id(spec: Any) -> str:
    return str(Path(spec.file).resolve())


def _open_state(spec: Any, out_dir: Path, quiet: bool, resume: bool = False) -> tuple[Any, Any]:
    """The runs' state file (flow.state) and this run's journal in it
    (flow.journal), after saying whether the graph's last run finished and
    whether this one resumes it; (None, None) if the file cannot be used (the
    run goes on without it). Raises Busy when another run holds it."""
    from ..journal import Journal
    from ..state import StateFile

    path = out_dir / spec.run.state
    state = None
    try:
        state = StateFile(path)  # Busy, another run's, is not caught here
        last = state.last_unfinished(_graph_id(spec))
        journal = Journal(path, _graph_id(spec), "resume" if resume and last is not None else "fresh")
    except (sqlite3.Error, OSError) as exc:
        info(f"flow: warning: the runs' state file {path}: {exc}; this run goes on without it")
        if state is not None:
            state.close()
        return None, None
    if quiet:
        return state, journal
    if last is not None:
        said = f"the last run of {spec.file} (run {last.run_id}, started {last.started_at}) did not finish: "
        if resume:
            kept = f"{journal.pages_stored} pages from {path}"
            info(f"flow: {said}{last.status}; resuming it: {kept}, the rest fetched")
        else:
            info(f"flow: {said}{last.status}; this run starts afresh (flow run --resume continues it)")
    elif resume:
        info(f"flow: nothing to resume: the last run of {spec.file} completed, or none ran; starting afresh")
    return state, journal


def _keep(state: Any, what: str, *args: Any) -> None:
    """A note in the state file, if there is one; a failure is said, not raised."""
    if state is None:
        return
    try:
        getattr(state, what)(*args)
    except sqlite3.Error as exc:
        info(f"flow: warning: the runs' state file: {exc}")


def run(args: argparse.Namespace) -> int:
    if not PRESSES.holding:  # called without `main`: no press before this run is its
        PRESSES.count = 0
    spec = load_checked(args)
    nodes = spec.nodes.items()
    serving = [f"node '{n}' ({s.kind.name})" for n, node in nodes for s in node.stages if s.kind.serves]
    if serving:
        info(f"flow: error: {', '.join(serving)} serves HTTP: run this graph with `flow serve {args.graph}`")
        return 2
    if args.cluster or spec.cluster is not None:  # the flag beats the graph's cluster: block
        from .cluster import run_cluster

        args.cluster = args.cluster or spec.cluster.target
        return run_cluster(args, spec)
    _quiet_exporter_logs()
    out_dir = Path(args.out or spec.run.out)
    live = not args.no_progress and not args.quiet and sys.stderr.isatty()
    from ..state import Busy

    try:
        state, journal = _open_state(spec, out_dir, args.quiet, args.resume)
    except Busy as exc:  # two runs writing one output directory would overwrite each other
        info(f"flow: error: {exc}; nothing ran (use another --out)")
        return 2
    facts: dict[str, str] = {}
    try:
        try:
            result, final_rows = asyncio.run(_run(args, spec, out_dir, live, state, facts, journal))
        except BaseException as exc:  # a second Ctrl-C, or a crash: the row says which
            if "run_id" in facts:
                ended = "interrupted" if isinstance(exc, KeyboardInterrupt) else "crashed"
                _keep(state, "ended", facts["run_id"], ended, utc_now())
            raise
        report = out_dir / "run.json"
        write_json_atomically(report, result.report())  # the report first, then the state file
        whole = result.status == "completed" and not result.lost
        _keep(journal, "finish", whole)  # nothing left to resume: its pages go
        status = "failed" if result.status == "completed" and result.lost else result.status
        _keep(state, "ended", facts["run_id"], status, utc_now())
    finally:
        if journal is not None:
            journal.close()
        if state is not None:
            state.close()
    if not args.quiet:
        from .progress import table

        out(table(final_rows).rstrip("\n"))
        out(_status_line(spec, result, report))
    for error in result.errors if args.verbose else []:
        info(f"  {error['node']}/{error['stage']}: {error['error']}: {error['detail']}")
    if PRESSES.count:  # pressed after the run ended: its report stands
        return 130
    if result.lost and result.status == "completed" and not args.quiet:
        info("flow: lost: " + "; ".join(result.lost))
    return int(result.exit_code(spec.run.on_loss, fail_on_error=args.fail_on_error))
