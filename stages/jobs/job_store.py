"""`job_store`: end each job in the job store with its result (a sink).

A job ends once (stages.jobs.store.JobStore.finish): a result for a job
that has ended already changes nothing and is counted as `duplicate`.
Results are stored as they come (`redact` before this stage cleans them);
`GET /jobs/{id}` answers from the same store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from flow.registry import Params, stage

from .items import JobResult


class JobStoreParams(Params):
    store: str = "jobs.db"  # the job store under run.out: the one `jobs` names


@stage("job_store", JobStoreParams, consumes=JobResult, produces=None, store=True)
async def job_store(source: AsyncIterator[JobResult], params: JobStoreParams, ctx: Any) -> AsyncIterator[Any]:
    """End every job with its result, once."""
    from .store import store_for

    store = store_for(ctx, params.store)
    async for result in source:
        ctx.count(f"jobs_{result.status}" if store.finish(result) else "duplicate")
    return
    yield  # a sink


KIND = job_store
