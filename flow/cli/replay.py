"""`flow replay GRAPH`: pass the stored dead letters through the graph again
(typically after its `map:` was fixed), from the stage that rejected them,
into the graph's database sinks (flow.replay says which part of the graph
runs). Those that now pass reach the sinks and leave the store; the rest
stay, with their new reason. The report is `OUT/replay.json` (run.json
stays the last run's); the ledger counts the replayed records as received.
Ctrl-C stops the replay (a second one cancels it): a replay that did not
end whole, stopped or lossy, leaves the store as it was (the sinks may hold
some of the records that passed; a later replay writes them again, which
an upsert absorbs)."""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from ..items import utc_now
from ._load import add_graph_arguments, load_checked
from ._output import info, out
from ._signals import SIGNALS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_graph_arguments(parser)
    parser.add_argument("--out", metavar="DIR", help="output directory (default: run.out of the graph)")
    parser.add_argument("--source", metavar="NAME", help="only the dead letters of this source (its node)")
    parser.add_argument("--reason", metavar="TEXT", help="only the dead letters whose reason contains TEXT")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="only errors")


async def _replay(spec: Any, out_dir: Path, journal: Any, state: Any, facts: dict[str, str]) -> Any:
    from ..runtime import Runtime
    from .run import _graph_id, _keep

    runtime = Runtime(spec, out_dir=out_dir, journal=journal)
    facts["run_id"] = runtime.telemetry.run_id
    _keep(state, "started", runtime.telemetry.run_id, _graph_id(spec), utc_now(), "replay")
    loop = asyncio.get_running_loop()
    presses = 0

    def interrupt() -> None:  # the first stops and drains, a second cancels
        nonlocal presses
        presses += 1
        runtime.stop("interrupted")
        if presses > 1:
            runtime.cancel_all()

    for sig in SIGNALS:
        loop.add_signal_handler(sig, interrupt)
    try:
        return await runtime.run()
    finally:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)


def run(args: argparse.Namespace) -> int:
    from ..journal import Journal
    from ..replay import plan
    from ..state import Busy, StateFile
    from .run import _graph_id

    spec = load_checked(args)
    out_dir = Path(args.out or spec.run.out)
    path = out_dir / spec.run.state
    if not path.exists():
        info(f"flow: nothing to replay: no state file {path} (flow run stores dead letters there)")
        return 0
    try:
        state = StateFile(path)
    except Busy as exc:
        info(f"flow: error: {exc}; nothing replayed")
        return 2
    except (sqlite3.Error, OSError) as exc:
        info(f"flow: error: the state file {path}: {exc}")
        return 1
    try:
        journal = Journal(path, _graph_id(spec), "replay")
    except (sqlite3.Error, OSError) as exc:
        state.close()
        info(f"flow: error: the state file {path}: {exc}")
        return 1
    try:
        letters = journal.letters(args.source, args.reason)
        return _run(args, spec, out_dir, state, journal, plan(spec, letters))
    finally:
        journal.close()
        state.close()


def _run(args: argparse.Namespace, spec: Any, out_dir: Path, state: Any, journal: Any, replay: Any) -> int:
    from .run import _keep, write_json_atomically

    for why, n in sorted(replay.left.items()):
        info(f"flow: {n} dead letters stay in the store: {why}")
    if not replay.letters:
        match = " (none match)" if args.source or args.reason else ""
        info(f"flow: no stored dead letters to replay{match}")
        return 1 if replay.left else 0
    facts: dict[str, str] = {}
    try:
        result = asyncio.run(_replay(replay.spec, out_dir, journal, state, facts))
    except BaseException as exc:  # a crash, or a Ctrl-C that cancelled: the row says which
        if "run_id" in facts:
            ended = "interrupted" if isinstance(exc, KeyboardInterrupt) else "crashed"
            _keep(state, "ended", facts["run_id"], ended, utc_now())
        raise
    report = result.report()
    whole = result.status == "completed" and not result.lost
    # Only a replay whose sinks took everything changes the store.
    passed = journal.settle(replay.letters) if whole else 0
    stayed = len(replay.letters) - passed
    report["replay"] = {"dead_letters": len(replay.letters), "passed": passed, "stayed": stayed}
    write_json_atomically(out_dir / "replay.json", report)
    status = "failed" if result.status == "completed" and result.lost else result.status
    _keep(state, "ended", facts["run_id"], status, utc_now())
    if not args.quiet:
        outcome = (
            f"{passed} now pass and left the store, {stayed} stay (with their new reason)"
            if whole
            else "the store is left as it was"
        )
        sinks = ", ".join(name for name, node in replay.spec.nodes.items() if node.stages[-1].kind.store)
        out(f"{result.status}: {len(replay.letters)} dead letters replayed into {sinks}: {outcome}; "
            f"report: {out_dir / 'replay.json'}")  # fmt: skip
    for line in result.lost:
        info(f"flow: lost: {line}")
    return int(result.exit_code(spec.run.on_loss))
