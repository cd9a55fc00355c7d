"""Webhooks of asynchronous vendors: `POST /vendor-webhook/{vendor}`.

A vendor signs each callback: `X-Flow-Timestamp` (Unix seconds) and
`X-Flow-Signature: sha256=HEX`, the HMAC-SHA256 of `"<timestamp>." + body`
under the vendor's shared secret. A callback is taken only when

    its vendor is an asynchronous vendor of this graph      else 404
    it is signed, and the signature verifies                else 401
    its timestamp is within `max_skew` of now               else 401 (a replay, or a clock gone wrong)
    its body is JSON naming a request_id the store knows    else 400 / 404

and then changes a job at most once: a callback for a job that has ended
(a duplicate) is answered 200 and changes nothing. A callback for a job
whose call is waiting resolves it; one that comes before its call waits
(the vendor answered the callback before its 202 reached flow), or after a
restart, is kept (at most `KEPT`) until the job's call takes it.
Signatures are compared in constant time (hmac.compare_digest).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import OrderedDict
from typing import Any

import msgspec

from .items import JobResult

KEPT = 1_000  # callbacks that came before their call, kept for it
_decode = msgspec.json.Decoder().decode


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, headers: Any, body: bytes, max_skew: float, now: float | None = None) -> str | None:
    """Why the callback is refused (None: it is genuine and fresh)."""
    timestamp, signed = headers.get("X-Flow-Timestamp"), headers.get("X-Flow-Signature")
    if not timestamp or not signed:
        return "unsigned: X-Flow-Timestamp and X-Flow-Signature are required"
    expected = signature(secret, timestamp, body).encode()
    if not hmac.compare_digest(expected, signed.encode("utf-8", "replace")):  # bytes: any text compares
        return "the signature does not verify"
    try:
        age = (time.time() if now is None else now) - int(timestamp)
    except ValueError:
        return "the timestamp is not Unix seconds"
    if abs(age) > max_skew:
        return f"the timestamp is {age:.0f} s off: a replay, or a clock gone wrong"
    return None


class Callbacks:
    """The asynchronous calls waiting for their vendor's callback, by request id."""

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[JobResult]] = {}
        self.kept: OrderedDict[str, JobResult] = OrderedDict()

    def expect(self, request_id: str) -> asyncio.Future[JobResult]:
        """A future for the job's callback (resolved at once if it came first)."""
        future: asyncio.Future[JobResult] = asyncio.get_running_loop().create_future()
        early = self.kept.pop(request_id, None)
        if early is not None:
            future.set_result(early)
        else:
            self.waiting[request_id] = future
        return future

    def forget(self, request_id: str) -> None:
        self.waiting.pop(request_id, None)

    def deliver(self, result: JobResult) -> bool:
        """Give the callback to its waiting call; False if none waits (kept)."""
        future = self.waiting.pop(result.request_id, None)
        if future is not None and not future.done():
            future.set_result(result)
            return True
        self.kept[result.request_id] = result
        while len(self.kept) > KEPT:
            self.kept.popitem(last=False)
        return False


def result_of(vendor: str, body: bytes) -> JobResult | str:
    """The job result a callback carries, or why it is malformed."""
    try:
        data = _decode(body)
    except msgspec.DecodeError as err:
        return f"the body is not JSON: {err}"
    if not isinstance(data, dict) or not isinstance(data.get("request_id"), str):
        return "the body names no request_id"
    status = data.get("status")
    if status not in ("complete", "failed"):
        return f"status {status!r} is neither complete nor failed"
    why = reason(status, data.get("error"))
    return JobResult(data["request_id"], status, vendor, data.get("result"), why)


def reason(status: str, error: Any) -> str | None:
    """A job's error as stored: the vendor's, or for a failure without one, that it gave none."""
    if error is not None:
        return str(error)
    return "the vendor reported the job failed and gave no reason" if status == "failed" else None
