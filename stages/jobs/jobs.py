"""`jobs`: the intake of a job service (a source; runs under `flow serve`).

    POST /jobs            any JSON payload -> 202 {"request_id": uuid4}, at once
    GET  /jobs/{id}       {"request_id", "status", "vendor", "result", "error", "created_at", "updated_at"}

A submitted payload is cleaned (`clean`: personal keys removed, e-mail
addresses and phone numbers replaced: stages.records.redact.clean_value),
stored `pending` in the job store (committed before the answer: it
survives a crash) and taken into the graph as the graph has room for it:
the source claims pending jobs a few at a time and waits on the edge after
it like any source, so jobs queue in the store, never in memory.

The intake is bounded: with `max_pending` jobs waiting, or once the service
is stopping, a submission is answered 503 with `Retry-After`. At start,
jobs a stopped service left `running` are resumed or failed
(`on_restart`); at a graceful stop, those still running go back to
`pending` (stages.jobs.store).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import msgspec

from flow.registry import Params, stage
from flow.units import Duration

from .items import Job

# Jobs taken from the store at a time: held by the source until the graph
# takes them, so they count against no bound; small, so that the intake's
# bound (pending rows) stays close to what waits.
CLAIM = 8


class JobsParams(Params):
    store: str = "jobs.db"  # the job store (SQLite), under run.out; job_store names the same
    max_pending: Annotated[int, msgspec.Meta(ge=1)] = 10_000  # jobs waiting before intake answers 503
    retry_after: Duration = Duration.default(1)  # what a 503 tells the client to wait
    on_restart: Literal["resume", "fail"] = "resume"  # jobs found running at start
    clean: bool = True  # clean payloads before they are stored (and sent on)
    keys: list[str] | None = None  # personal keys removed from payloads (default: redact's)


@stage("jobs", JobsParams, consumes=None, produces=Job, serves=True)
async def jobs(source: None, params: JobsParams, ctx: Any) -> AsyncIterator[Job]:
    """Take jobs over HTTP (POST /jobs, GET /jobs/{id}) into the store, and into the graph."""
    from stages.records.redact import PERSONAL_KEYS, clean_value, personal

    from .store import store_for

    store = store_for(ctx, params.store)
    recovered = store.recover(resume=params.on_restart == "resume")
    if recovered:
        what = "resumed" if params.on_restart == "resume" else "failed"
        ctx.say("jobs_recovered", f"jobs: {recovered} jobs found running at start: {what}", jobs=recovered)
    keys = personal(params.keys if params.keys is not None else PERSONAL_KEYS)
    arrived = asyncio.Event()
    retry_after = str(max(1, round(float(params.retry_after))))

    async def submit(request: Any) -> Any:
        from flow.serving import json_response

        if ctx.stopping.is_set() or store.pending >= params.max_pending:
            why = "stopping" if ctx.stopping.is_set() else f"{store.pending} jobs waiting"
            return json_response({"error": f"busy: {why}"}, 503, {"Retry-After": retry_after})
        try:
            payload = msgspec.json.decode(await request.read())
        except msgspec.DecodeError as err:
            return json_response({"error": f"the body is not JSON: {err}"}, 400)
        if params.clean:
            try:
                payload, removed = clean_value(payload, keys)
            except ValueError as err:  # nested too deep to clean (and to pass on)
                return json_response({"error": f"the payload is {err}"}, 400)
            if removed:
                ctx.count("redacted", removed)
        try:
            request_id = store.submit(payload)
        except sqlite3.OperationalError as err:  # the store is locked or full: the client may retry
            return json_response({"error": f"busy: the job store: {err}"}, 503, {"Retry-After": retry_after})
        ctx.count("jobs_submitted")
        arrived.set()
        return json_response({"request_id": request_id}, 202)

    async def status(request: Any, request_id: str) -> Any:
        from flow.serving import json_response

        found = store.get(request_id)
        if found is None:
            return json_response({"error": f"no job {request_id}"}, 404)
        return json_response(found)

    ctx.route("POST", "/jobs", submit)
    ctx.route("GET", "/jobs/{request_id}", status)
    while not ctx.stopping.is_set():
        try:
            claimed = store.claim(CLAIM)
        except sqlite3.OperationalError as err:  # locked a moment: the jobs wait in the store
            ctx.record_event("store_busy", detail=str(err))
            await asyncio.sleep(0.5)
            continue
        if not claimed:
            arrived.clear()
            await _either(arrived, ctx.stopping)
            continue
        for job in claimed:
            yield job  # waits while the graph is full: the rest stay pending in the store


async def _either(first: asyncio.Event, second: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await wait


KIND = jobs
