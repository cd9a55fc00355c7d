"""Mock vendors of a multi-vendor fetch service: `sync_vendor` answers a job
in the request; `async_vendor` accepts it (202) and answers later with a
signed POST to the client's webhook. docs/mocks.md gives the protocol.

    arrive -> log -> rate limit (429) -> route (404, 405) -> API key (401)
           -> outage (503) -> body (400) -> fault draw -> latency -> the job

Data structures: `jobs` maps request_id -> Job in arrival order. A job is
made once, when a request for a new request_id gets past every check and the
error, html and reset faults; a later request with that id is answered from
it (idempotent) and counted as a repeat. A job's failure, vendor job id,
callback fate and delay are functions of (seed, request_id), its records of
(seed, payload); fault draws are the catalogue servers' (mocks/_faults.py)
keyed by request_id. So one seed gives the same answers whatever the order
of requests; only `processed_at` and the callback timestamp are wall time.

Concurrency: one event loop; jobs and logs change between awaits only. Each
callback copy (two for a duplicated callback) is a task in `_deliveries`,
sleeping on the server's clock; `reset()` cancels them, `close()` cancels
and awaits them, so none outlives the server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flow._tls import import_deferring_ca_store

from ._faults import HTML_PAGE, invalid_json, truncated
from ._hashing import stream_key, text_draw, unit
from ._ratelimit import retry_after_header
from ._server import Clock, Listening, MockServer
from ._spec import ServerSpec
from ._vendor_jobs import REASONS, Delivery, Job, JobRequest, callback_signature, parse_job, vendor_records

if TYPE_CHECKING:
    import aiohttp
    from aiohttp import web
else:  # plain HTTP on loopback: no CA store loaded at import (flow/_tls.py)
    aiohttp = import_deferring_ca_store("aiohttp")
    web = import_deferring_ca_store("aiohttp.web")

__all__ = ["CALLBACK_ATTEMPTS", "VendorServer", "callback_signature", "vendor_records"]

PATHS = {"sync_vendor": "/v1/process", "async_vendor": "/v1/jobs"}
CALLBACK_ATTEMPTS = 3  # per copy; a connection error or a 5xx is retried, a 4xx is not
CALLBACK_BACKOFF = 0.5  # seconds before the 2nd attempt, doubled before each later one
CALLBACK_TIMEOUT = 5.0  # seconds for one attempt
DUPLICATE_GAP = 0.1  # seconds between the two copies of a duplicated callback
_LOG_FIELDS = ("t", "method", "path", "request_id", "status", "fault", "latency")
_JOB_FIELDS = ("request_id", "t", "status", "repeats", "vendor_job_id", "callback", "delay")  # last 3: async

class VendorServer(Listening):
    """A mock vendor on 127.0.0.1. Use `async with VendorServer(spec) as vendor:`."""

    def __init__(
        self, spec: ServerSpec, *, name: str = "vendor", host: str = "127.0.0.1", clock: Clock | None = None
    ) -> None:
        if spec.style not in PATHS:
            raise ValueError(f"style {spec.style!r} is not a vendor; choose one of: {', '.join(PATHS)}")
        super().__init__(spec, name, host, clock)
        self.path = PATHS[spec.style]
        self.asynchronous = spec.style == "async_vendor"
        self._api_key = spec.api_key or None
        self._keys = {s: stream_key(spec.seed, f"vendor.{s}") for s in ("failure", "callback", "delay")}
        self._job_key = stream_key(spec.seed, f"vendor.job.{name}")
        self._session: aiohttp.ClientSession | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self._reset_state()

    def _held(self) -> str:
        return f"jobs={len(self.jobs)} callbacks_pending={len(self._deliveries)}"

    # --- lifecycle -----------------------------------------------------------
    async def start(self) -> str:
        if self.asynchronous:  # the callbacks' client, there before the first job
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALLBACK_TIMEOUT))
        await self._listen()
        self._reset_state()
        return self.url

    async def close(self) -> None:
        """Stop serving, then cancel the callbacks still to be sent (no handler
        is left to schedule one), then close the callbacks' client session."""
        await self._stop_listening()
        await self._cancel_deliveries()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _reset_state(self) -> None:
        self._started = self.clock.now()
        self._cpu_started = time.process_time()
        self._log: list[list[Any]] = []
        self.jobs: dict[str, Job] = {}
        self.callbacks: list[Delivery] = []
        if self.limiter:
            self.limiter.reset()
        self.faults.reset()

    def reset(self) -> None:
        """Forget everything observed; callbacks not yet sent are cancelled."""
        for task in self._deliveries:
            task.cancel()
        self._reset_state()

    async def _cancel_deliveries(self) -> None:
        for task in self._deliveries:
            task.cancel()
        await asyncio.gather(*self._deliveries, return_exceptions=True)

    async def drain(self) -> None:
        """Return once every callback scheduled so far has been delivered, refused or given up."""
        while self._deliveries:
            await asyncio.gather(*self._deliveries, return_exceptions=True)

    # --- the request pipeline ------------------------------------------------
    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path.startswith("/__"):
            return await self._admin(request)
        t = self.clock.now() - self._started
        entry: list[Any] = [t, request.method, request.path, None, None, None, 0.0]
        self._log.append(entry)
        try:
            response = await self._answer(request, t, entry)
        except asyncio.CancelledError:
            entry[4] = 499  # the client gave up (a hang, usually)
            raise
        if response is None:  # connection reset: no status at all
            return web.Response()
        entry[4] = response.status
        return response

    async def _answer(self, request: web.BaseRequest, t: float, entry: list[Any]) -> web.Response | None:
        # Admitted or not at arrival (no await before), as the log's order says.
        refused = self.limiter is not None and not self.limiter.admit(t)
        wait = self.limiter.retry_after(t) if refused and self.limiter else None
        try:  # read first, so that the log names the request_id of every request carrying one
            job_request: JobRequest | None = parse_job(await request.read(), self.asynchronous)
            bad = ""
        except ValueError as err:
            job_request, bad = None, str(err)
        entry[3] = job_request and job_request.request_id
        refusal = self._refusal(request, t, wait)
        if refusal is not None or job_request is None:
            entry[5], response = refusal or ("bad_request", self._json({"error": bad}, 400))
            return response
        rid = job_request.request_id
        decision = self.faults.decide(self.path, "request_id=" + rid)
        entry[5], entry[6] = decision.fault, decision.latency
        if decision.latency > 0:
            await self.clock.sleep(decision.latency)
        if decision.fault == "error":
            return self._json({"error": "Internal Server Error"}, decision.status)
        if decision.fault == "reset":
            MockServer._reset_connection(request)
            return None
        if decision.fault == "html":
            return web.Response(body=HTML_PAGE, content_type="text/html", charset="utf-8")
        # The vendor does the job: truncate and invalid_json mangle an answer
        # to a job that was made (a retry is then a repeat).
        job = self._job(job_request, t)
        if self.asynchronous:
            body = self._encode({"request_id": rid, "vendor_job_id": job.vendor_job_id})
        else:
            body = self._encode(job.reply)
        if decision.fault == "truncate":
            body = truncated(body)
        elif decision.fault == "invalid_json":
            body = invalid_json(body)
        status = 202 if self.asynchronous else 200
        return web.Response(body=body, status=status, content_type="application/json")

    def _refusal(
        self, request: web.BaseRequest, t: float, wait: float | None
    ) -> tuple[str, web.Response] | None:
        """The checks before the body's, in order: (fault, answer) of the first that refuses;
        `wait`: the limiter refused the request, for that long."""
        if wait is not None and self.limiter is not None:
            wait_header = retry_after_header(wait)
            headers = {"Retry-After": wait_header, "RateLimit-Limit": str(self.limiter.limit),
                       "RateLimit-Remaining": "0", "RateLimit-Reset": wait_header}  # fmt: skip
            message = f"Too many requests: at most {self.limiter.limit} per {self.limiter.window:g}s"
            return "rate_limited", self._json({"error": message}, 429, headers)
        if request.path != self.path:
            message = f"no route {request.path}; jobs go to POST {self.path}"
            return "not_found", self._json({"error": message}, 404)
        if request.method != "POST":
            message = f"{request.method} not allowed; jobs go to POST {self.path}"
            return "bad_method", self._json({"error": message}, 405, {"Allow": "POST"})
        if self._api_key is not None and request.headers.get("x-api-key") != self._api_key:
            return "unauthorized", self._json({"error": "Missing or invalid API key (x-api-key)"}, 401)
        if self.faults.outages and self.faults.in_outage(t):
            return "outage", self._json({"error": "Service Unavailable"}, self.faults.outage_status)
        return None

    def _job(self, request: JobRequest, t: float) -> Job:
        """The job for its request_id: the one made before (a repeat), else a
        new one, its callback scheduled."""
        rid = request.request_id
        job = self.jobs.get(rid)
        if job is not None:
            job.repeats += 1
            return job
        failure = text_draw(self._keys["failure"], rid, 0)
        reply: dict[str, Any] = {"request_id": rid, "vendor": self.name}
        if unit(failure) < self.spec.failure_rate:
            reply.update(status="failed", result=None, error=REASONS[failure % len(REASONS)])
        else:
            records = vendor_records(request.payload, self.spec.seed)
            processed_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            reply.update(status="complete", result={"records": records, "processed_at": processed_at})
        if not self.asynchronous:
            job = self.jobs[rid] = Job(rid, t, reply)
            return job
        vendor_job_id = f"vj_{text_draw(self._job_key, rid, 0):016x}"
        reply = {"request_id": rid, "vendor_job_id": vendor_job_id, **reply, "error": reply.get("error")}
        u = unit(text_draw(self._keys["callback"], rid, 0))  # loss and duplicate: bands on [0, 1)
        lost = u < self.spec.callback_loss_rate
        twice = not lost and u < self.spec.callback_loss_rate + self.spec.callback_duplicate_rate
        low, high = self.spec.timing.callback_delay
        delay = low + (high - low) * unit(text_draw(self._keys["delay"], rid, 0))
        fate = "lost" if lost else "twice" if twice else "once"
        job = self.jobs[rid] = Job(rid, t, reply, vendor_job_id, fate, delay)
        for copy in range(0 if lost else 2 if twice else 1):
            delivery = Delivery(rid, vendor_job_id, copy, t + delay + copy * DUPLICATE_GAP)
            self.callbacks.append(delivery)
            sending = self._deliver(job, request.callback_url or "", delivery)
            task = asyncio.create_task(sending, name=f"callback {rid} copy {copy}")
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)
        return job

    # --- callbacks -----------------------------------------------------------
    def _signed(self, job: Job) -> tuple[bytes, dict[str, str]]:
        """The callback's body and headers, made once, at its first send: every
        attempt and both copies of a duplicate carry the same signature."""
        if job.signed is None:
            body, timestamp = self._encode(job.reply), str(int(time.time()))
            headers = {"Content-Type": "application/json", "X-Flow-Timestamp": timestamp,
                       "X-Flow-Signature": callback_signature(self.spec.secret, timestamp, body)}  # fmt: skip
            job.signed = (body, headers)
        return job.signed

    async def _deliver(self, job: Job, url: str, delivery: Delivery) -> None:
        try:
            await self.clock.sleep(max(0.0, delivery.due - (self.clock.now() - self._started)))
            for attempt in range(CALLBACK_ATTEMPTS):
                if attempt:
                    await self.clock.sleep(CALLBACK_BACKOFF * 2 ** (attempt - 1))
                sent: dict[str, Any] = {"t": self.clock.now() - self._started, "status": None, "error": None}
                delivery.attempts.append(sent)
                body, headers = self._signed(job)
                assert self._session is not None
                try:
                    async with self._session.post(
                        url, data=body, headers=headers, allow_redirects=False
                    ) as response:
                        sent["status"] = response.status
                        await response.read()
                except (aiohttp.ClientError, TimeoutError) as err:
                    sent["error"] = f"{type(err).__name__}: {err}".rstrip(": ")
                    continue
                if response.status < 500:
                    delivery.outcome = "delivered" if response.status < 300 else "refused"
                    return
            delivery.outcome = "gave_up"
        except asyncio.CancelledError:
            delivery.outcome = "cancelled"
            raise

    # --- observation ---------------------------------------------------------
    async def _admin(self, request: web.BaseRequest) -> web.Response:
        if request.path == "/__stats" and request.method == "GET":
            summary = request.query.get("summary", "") not in {"", "0", "false"}
            return self._json(self.stats(summary=summary), 200)
        if request.path == "/__reset" and request.method == "POST":
            self.reset()
            return self._json({"ok": True}, 200)
        if request.path == "/__health":
            return self._json({"ok": True, "name": self.name, "style": self.spec.style}, 200)
        return self._json({"error": f"no admin route {request.method} {request.path}"}, 404)

    def stats(self, *, summary: bool = False) -> dict[str, Any]:
        """What `/__stats` returns; docs/mocks.md describes every field."""
        spec, jobs = self.spec, self.jobs.values()
        server = {"name": self.name, "style": spec.style, "url": self.url, "path": self.path,
                  "seed": spec.seed, "rate_limit": spec.rate_limit, "failure_rate": spec.failure_rate,
                  "uptime": self.clock.now() - self._started,
                  "cpu_seconds": time.process_time() - self._cpu_started}  # fmt: skip
        counts: dict[str, Any] = {
            "requests": len(self._log),
            "by_status": dict(Counter(str(e[4]) for e in self._log)),
            "by_fault": dict(Counter(e[5] for e in self._log if e[5])),
            "jobs": len(self.jobs),
            "failed": sum(job.status == "failed" for job in jobs),
            "repeats": sum(job.repeats for job in jobs),
        }
        if self.asynchronous:
            server.update(callback_delay=spec.callback_delay, callback_loss_rate=spec.callback_loss_rate,
                          callback_duplicate_rate=spec.callback_duplicate_rate)  # fmt: skip
            fates = Counter(job.callback for job in jobs)
            outcomes = Counter(d.outcome for d in self.callbacks)
            counts["callbacks"] = {
                "scheduled": fates["once"] + fates["twice"], "duplicated": fates["twice"],
                "lost": fates["lost"],
                "copies": len(self.callbacks), "attempts": sum(len(d.attempts) for d in self.callbacks),
                **{k: outcomes[k] for k in ("pending", "delivered", "refused", "gave_up", "cancelled")},
            }  # fmt: skip
        out: dict[str, Any] = {"server": server, "counts": counts}
        if not summary:
            out["requests"] = [dict(zip(_LOG_FIELDS, entry, strict=True)) for entry in self._log]
            kept = _JOB_FIELDS[: None if self.asynchronous else 4]
            out["jobs"] = [{k: getattr(job, k) for k in kept} for job in jobs]
            if self.asynchronous:
                out["callbacks"] = [dataclasses.asdict(d) for d in self.callbacks]
        return out
