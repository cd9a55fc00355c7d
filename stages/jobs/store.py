"""The job store: SQLite, one row per job, shared by `jobs` and `job_store`.

    pending -> running -> complete | failed

A job is written `pending` before its id is answered (a committed row: it
survives a crash of the process), claimed `running` when the graph takes
it, and ends once: `finish` changes only a job that has not ended, so a
result that comes twice (a duplicate webhook) changes nothing. At start,
jobs left `running` by a service that stopped are resumed (back to
`pending`, sent again with the same request id: vendors deduplicate by it)
or failed with the reason, as the `jobs` stage's `on_restart` says; at a
graceful stop, jobs still running go back to `pending`.

Every call runs on the event loop: WAL with synchronous=NORMAL makes a
commit a write to the log without an fsync (~30 µs), durable against a
crash of the process, not of the machine. One connection, no threads: the
loop orders every change.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import msgspec

from flow.items import utc_now

from .items import Job, JobResult

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    request_id TEXT PRIMARY KEY, status TEXT NOT NULL, payload TEXT NOT NULL, result TEXT, error TEXT,
    vendor TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_at);
"""
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
ENDED = ("complete", "failed")
RESUMES = 3  # times a job found running at start is resumed, then failed


class StoreInUse(Exception):
    """Another service holds the store."""


def _exclusive(path: Path) -> Any:
    """An exclusive lock on `path`.lock for the store's life: two services on
    one store would resume and release each other's running jobs."""
    import fcntl

    lock = open(path.with_name(path.name + ".lock"), "w")  # noqa: SIM115 (held open while the store is)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise StoreInUse(f"{path}: another flow serve uses this job store") from None
    return lock


class JobStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = _exclusive(path)
        # A short busy wait: every call runs on the event loop (a locked store answers 503, not a stall).
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0.2)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self.pending = self._count("pending")  # kept in step by submit/claim: no COUNT per request

    def _count(self, status: str) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (status,)).fetchone()[0])

    def recover(self, resume: bool) -> int:
        """Jobs a stopped service left running: back to pending (`resume`), or
        failed with the reason; a job resumed RESUMES times already is failed
        (it may be what stops the service). How many."""
        now = utc_now()
        poison = f"the service stopped {RESUMES + 1} times while the job ran; not resumed again"
        self.db.execute(
            "UPDATE jobs SET status = 'failed', error = ?, updated_at = ?"
            " WHERE status = 'running' AND attempts >= ?",
            (poison, now, RESUMES),
        )
        if resume:
            cursor = self.db.execute(
                "UPDATE jobs SET status = 'pending', updated_at = ?, attempts = attempts + 1"
                " WHERE status = 'running'",
                (now,),
            )
        else:
            why = "the service stopped while the job ran (on_restart: fail)"
            cursor = self.db.execute(
                "UPDATE jobs SET status = 'failed', error = ?, updated_at = ? WHERE status = 'running'",
                (why, now),
            )
        self.pending = self._count("pending")
        return cursor.rowcount

    def submit(self, payload: Any) -> str:
        """A new pending job; its request id (a uuid4)."""
        request_id, now = str(uuid.uuid4()), utc_now()
        self.db.execute(
            "INSERT INTO jobs (request_id, status, payload, created_at, updated_at)"
            " VALUES (?, 'pending', ?, ?, ?)",
            (request_id, _encode(payload), now, now),
        )
        self.pending += 1
        return request_id

    def get(self, request_id: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT request_id, status, vendor, result, error, created_at, updated_at"
            " FROM jobs WHERE request_id = ?",
            (request_id,),
        ).fetchone()
        if row is None:
            return None
        rid, status, vendor, result, error, created, updated = row
        return {"request_id": rid, "status": status, "vendor": vendor,
                "result": _decode(result) if result is not None else None, "error": error,
                "created_at": created, "updated_at": updated}  # fmt: skip

    def status(self, request_id: str) -> str | None:
        row = self.db.execute("SELECT status FROM jobs WHERE request_id = ?", (request_id,)).fetchone()
        return None if row is None else str(row[0])

    def claim(self, limit: int) -> list[Job]:
        """Up to `limit` pending jobs, oldest first, now running."""
        rows = self.db.execute(
            "SELECT request_id, payload, created_at, attempts FROM jobs WHERE status = 'pending'"
            " ORDER BY created_at LIMIT ?",
            (limit,),
        ).fetchall()
        if not rows:
            return []
        now = utc_now()
        self.db.executemany(
            "UPDATE jobs SET status = 'running', updated_at = ? WHERE request_id = ?",
            [(now, r[0]) for r in rows],
        )
        self.pending -= len(rows)
        return [Job(rid, _decode(body), created, resumed=tries > 0) for rid, body, created, tries in rows]

    def finish(self, result: JobResult) -> bool:
        """End a job with its result; False (nothing changed) if it had ended."""
        cursor = self.db.execute(
            "UPDATE jobs SET status = ?, vendor = ?, result = ?, error = ?, updated_at = ?"
            " WHERE request_id = ? AND status NOT IN ('complete', 'failed')",
            (result.status, result.vendor, None if result.result is None else _encode(result.result),
             result.error, utc_now(), result.request_id),
        )  # fmt: skip
        return cursor.rowcount == 1

    def release(self) -> int:
        """At a graceful stop: jobs still running go back to pending."""
        cursor = self.db.execute(
            "UPDATE jobs SET status = 'pending', updated_at = ? WHERE status = 'running'", (utc_now(),)
        )
        self.pending = self._count("pending")
        return cursor.rowcount

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())

    def close(self) -> None:
        self.release()
        self.db.close()
        self._lock.close()


def store_for(ctx: Any, path: str) -> JobStore:
    """The run's store at `path` (under run.out), shared by the stages naming it."""
    target = ctx.output_path(path)
    return ctx.resource(("jobs.store", str(target)), lambda: JobStore(target), JobStore.close)
