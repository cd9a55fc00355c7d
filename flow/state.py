"""The runs' state file (`run.state`, default OUT/state.db, SQLite): a row
per run of a graph, so that a run knows whether the one before it finished.

    runs   run_id (key), graph (its path, resolved), pid, status, started_at,
           finished_at

`flow run` records its run as `running` before anything is fetched and its
status (completed, interrupted, deadline) when it ends. A row still
`running` whose process is gone is a run that was killed or crashed. The
next run of the same graph finds the last run not `completed` and says so on
stderr (`last_unfinished`), then starts fresh. (Resuming from the pages the
sinks committed will build on this file.)

One short transaction per call, WAL journal: another process reading the
file (a second run of the graph) never sees half a row.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, graph TEXT NOT NULL, pid INTEGER,"
    " status TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT)"
)


@dataclass(frozen=True)
class Unfinished:
    run_id: str
    started_at: str
    status: str  # "interrupted", "deadline", "killed or crashed", "still running (pid N)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


class StateFile:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, timeout=5)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def last_unfinished(self, graph: str) -> Unfinished | None:
        """The last run of `graph`, if it did not complete."""
        row = self.db.execute(
            "SELECT run_id, pid, status, started_at FROM runs WHERE graph = ? ORDER BY rowid DESC LIMIT 1",
            (graph,),
        ).fetchone()
        if row is None or row[2] == "completed":
            return None
        run_id, pid, status, started_at = row
        if status == "running":
            if pid is not None and pid != os.getpid() and _alive(pid):
                return Unfinished(run_id, started_at, f"still running (pid {pid})")
            self.db.execute("UPDATE runs SET status = 'crashed' WHERE run_id = ?", (run_id,))
            status = "killed or crashed"
        elif status == "crashed":
            status = "killed or crashed"
        return Unfinished(run_id, started_at, status)

    def started(self, run_id: str, graph: str, started_at: str) -> None:
        self.db.execute(
            "INSERT INTO runs (run_id, graph, pid, status, started_at) VALUES (?, ?, ?, 'running', ?)",
            (run_id, graph, os.getpid(), started_at),
        )

    def ended(self, run_id: str, status: str, finished_at: str) -> None:
        self.db.execute(
            "UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?", (status, finished_at, run_id)
        )
