"""`job_store`: end each job in the job store with its result (a sink).

A job ends once (stages.jobs.store.JobStore.finish): a result for a job
that has ended already changes nothing and is counted as `duplicate`.
Results are stored as they come (`redact` before this stage cleans them);
`GET /jobs/{id}` answers from the same store.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

from flow.registry import Params, stage

from .items import JobResult

TRIES = 5  # a locked store is tried this often for one result; the job then stays running (resumed at start)


class JobStoreParams(Params):
    store: str = "jobs.db"  # the job store under run.out: the one `jobs` names


@stage("job_store", JobStoreParams, consumes=JobResult, produces=None, store=True)
async def job_store(source: AsyncIterator[JobResult], params: JobStoreParams, ctx: Any) -> AsyncIterator[Any]:
    """End every job with its result, once."""
    from .store import store_for

    store = store_for(ctx, params.store)
    async for result in source:
        for attempt in range(TRIES):
            try:
                ended = store.finish(result)
            except sqlite3.OperationalError as err:  # the store locked a moment: try again, then say so
                if attempt == TRIES - 1:
                    await ctx.error("store_busy", f"job {result.request_id} not ended: {err}")
                    break
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            ctx.count(f"jobs_{result.status}" if ended else "duplicate")
            break
    return
    yield  # a sink


KIND = job_store
