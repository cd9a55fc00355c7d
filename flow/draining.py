"""Ending a run that outlived its grace: cancelling its nodes in waves."""

from __future__ import annotations

import asyncio
from typing import Any

SINK_GRACE = 1.0  # seconds sinks get to close their outputs once the grace is over


async def cancel_in_waves(
    tasks: dict[str, asyncio.Task[None]], depth: dict[str, int], sinks: set[str], work: asyncio.Future[Any]
) -> None:
    """Cancel the nodes' `tasks` in waves, upstream first, within SINK_GRACE,
    so that a partial report beats none and keeps what was made. Each wave
    cancels the nodes at one `depth` that are still running (stuck on an
    endpoint: a backoff, a breaker, a hang), whose outputs then end, so the
    nodes below flush what they hold (dedupe, windows) within the wave's
    share of the time instead of being cancelled with them; sinks last.
    Returns once `work` (all the tasks) is done."""
    levels = sorted({depth[name] for name in tasks if name not in sinks})
    for level in levels:
        for name, task in tasks.items():
            if depth[name] == level and name not in sinks:
                task.cancel()
        done, _ = await asyncio.wait({work}, timeout=SINK_GRACE / len(levels))
        if done:
            return
    for task in tasks.values():
        task.cancel()
    await asyncio.wait({work})
