"""The runs' state file (`run.state`, default OUT/state.db, SQLite): a row
per run of a graph, so that a run knows whether the one before it finished.

    flow_runs   run_id (key), graph (its path, resolved), pid, status,
                started_at, finished_at, mode (run, resume or replay)

`flow run` takes an exclusive lock on `STATE.lock` for its whole life (the
kernel drops it when the process ends, however it ends): a second run with
the same output directory is refused while the first holds it, and a row
still `running` with nobody holding the lock is a run that was killed or
crashed. The run records itself as `running` before anything is fetched and
its outcome (completed; failed: it lost something; interrupted, deadline,
crashed) when it ends. The next run of the same graph finds the last run
(a replay aside) that did not complete: `flow run` says so on stderr and
starts afresh, `flow run --resume` continues it from the pages its journal
kept (flow.journal, in the same file).

The file is a convenience, not part of the run's data: if it cannot be
used (locked too long, read-only, damaged), the run says so once and goes
on without it.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import IO

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS flow_runs (run_id TEXT PRIMARY KEY, graph TEXT NOT NULL, pid INTEGER,"
    " status TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT, mode TEXT NOT NULL DEFAULT 'run')"
)


class Busy(Exception):
    """Another run holds this output directory's state file."""


@dataclass(frozen=True)
class Unfinished:
    run_id: str
    started_at: str
    status: str  # "failed", "interrupted", "deadline", "killed or crashed"


class StateFile:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock: IO[str] | None = open(f"{path}.lock", "a+")  # noqa: SIM115 (held for the run's life)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.seek(0)
            holder = self._lock.read().strip() or "another process"
            self._lock.close()
            raise Busy(f"{path} is in use by a run still going (pid {holder})") from None
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(str(os.getpid()))
        self._lock.flush()
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, timeout=5)
        self.db.execute(_SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(flow_runs)")}
        if "mode" not in columns:  # a state file of an earlier flow
            self.db.execute("ALTER TABLE flow_runs ADD COLUMN mode TEXT NOT NULL DEFAULT 'run'")

    def close(self) -> None:
        self.db.close()
        if self._lock is not None:
            self._lock.close()  # releases the lock
            self._lock = None

    def last_unfinished(self, graph: str) -> Unfinished | None:
        """The last run of `graph`, if it did not complete. A row still
        `running` is one killed or crashed: this process holds the lock."""
        row = self.db.execute(
            "SELECT run_id, status, started_at FROM flow_runs WHERE graph = ? AND mode != 'replay'"
            " ORDER BY rowid DESC LIMIT 1",
            (graph,),
        ).fetchone()
        if row is None or row[1] == "completed":
            return None
        run_id, status, started_at = row
        if status == "running":
            self.db.execute("UPDATE flow_runs SET status = 'crashed' WHERE run_id = ?", (run_id,))
        if status in ("running", "crashed"):
            status = "killed or crashed"
        return Unfinished(run_id, started_at, status)

    def started(self, run_id: str, graph: str, started_at: str, mode: str = "run") -> None:
        self.db.execute(
            "INSERT INTO flow_runs (run_id, graph, pid, status, started_at, mode)"
            " VALUES (?, ?, ?, 'running', ?, ?)",
            (run_id, graph, os.getpid(), started_at, mode),
        )

    def ended(self, run_id: str, status: str, finished_at: str) -> None:
        self.db.execute(
            "UPDATE flow_runs SET status = ?, finished_at = ? WHERE run_id = ?", (status, finished_at, run_id)
        )
