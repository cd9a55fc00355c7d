"""What a run reports: per-stage and per-node statistics, and `RunResult`,
whose `report()` is `run.json`."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StageStats:
    stage: str
    items_out: int = 0
    errors: int = 0


@dataclass
class NodeStats:
    stages: list[StageStats]
    dropped: int = 0  # items taken from the input after the branch ended on an error
    seconds: float = 0.0  # from the start of the run until the node finished


@dataclass
class RunResult:
    status: str  # "completed" | "interrupted" | "deadline"
    started_at: str
    seconds: float
    nodes: dict[str, NodeStats]
    errors: list[dict[str, Any]]
    events: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # what the run lost, in words (empty: nothing)
    trace_id: str | None = None  # the run's trace, while tracing (find it in Jaeger)
    outputs: list[str] = field(default_factory=list)  # files the stages wrote
    ledger: dict[str, dict[str, Any]] = field(default_factory=dict)  # per source (flow.ledger)

    def exit_code(self, on_loss: str = "fail", *, fail_on_error: bool = False) -> int:
        """`flow run`'s exit code: 130 interrupted; 1 when the deadline cut
        the run short, or when it lost anything (`lost`: pages or items that
        failed for good, pages not attempted, a source that produced nothing,
        an unbalanced ledger) under `run.on_loss: fail` (the default) or
        --fail-on-error; else 0."""
        if self.status == "interrupted":
            return 130
        if self.status == "deadline":
            return 1
        return 1 if self.lost and (on_loss == "fail" or fail_on_error) else 0

    def report(self) -> dict[str, Any]:
        """The run report (`run.json`); valid for partial runs too."""
        return {
            "status": self.status,
            "lost": self.lost,
            "trace_id": self.trace_id,
            "started_at": self.started_at,
            "seconds": round(self.seconds, 3),
            "ledger": self.ledger,
            "nodes": {
                name: {
                    "stages": [dataclasses.asdict(s) for s in n.stages],
                    "dropped": n.dropped,
                    "seconds": round(n.seconds, 3),
                    "counters": self.counters.get(name, {}),
                }
                for name, n in self.nodes.items()
            },
            "errors": self.errors,
            "events": self.events,
            "dead_letters": self.dead_letters,  # the first 1,000; every one is counted in the ledger
        }


def run_losses(status: str, errors: list[dict[str, Any]], silent: list[str]) -> list[str]:
    """What did not make it, besides what the ledger says: pages or items
    that failed for good (error records of nodes), sources that produced
    nothing, a cut-short run. Dead letters and counted duplicates are
    accounted for, not lost."""
    lost = []
    if status != "completed":
        lost.append(f"the run was cut short ({status})")
    failed = sum(1 for e in errors if e["node"] is not None)
    if failed:
        lost.append(f"{failed} error records: pages or items that failed for good, walks cut short")
    lost += [f"source '{name}' produced nothing" for name in silent]
    return lost


async def call_at_end(callbacks: list[Any], run: dict[str, Any], within: float) -> list[str]:
    """Each `ctx.at_run_end` callback with the run's facts, in the order
    they were registered, a coroutine one for at most `within` seconds;
    what failed, as text (one failure does not keep the others from running)."""
    import asyncio

    failed = []
    for callback in callbacks:
        try:
            outcome = callback(run)
            if inspect.isawaitable(outcome):
                await asyncio.wait_for(outcome, within)
        except TimeoutError:
            failed.append(f"{callback!r} still running after {within:g} s (run.grace)")
        except Exception as exc:
            failed.append(f"{type(exc).__name__}: {exc}")
    return failed
