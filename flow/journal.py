"""The run's journal in the state file (flow.state): what a resumed run
takes instead of fetching again, and the dead letters a replay pushes back.

Two tables beside `flow_runs`, keyed by the graph (its resolved path):

    flow_pages         graph, scope, key, value, run_id
                       what a stage obtained at a cost (fetch: a page's
                       status, headers and body), stored before the stage
                       passes it on: `ctx.keep(key, value)` returns once it
                       is committed, `ctx.recall(key)` gives it to a resumed run
    flow_dead_letters  graph, key (node, stage, endpoint, page, position),
                       node, stage, endpoint, page, position, reason, raw
                       (JSON), id (JSON), timestamp, run_id

Lifecycle, by the run's mode:
    fresh   forgets the graph's pages and dead letters, then stores its own
    resume  keeps them: a page found is taken from here, the rest fetched;
            a dead letter found again replaces its row
    replay  reads dead letters (`letters`), stores the ones that fail again
            (same key, new reason) and forgets the ones that passed (`forget`)
A run that completes with nothing lost forgets its pages (nothing is left
to resume); its dead letters stay for `flow replay`.

Writes go to one thread of their own, in batches (one transaction each):
the loop never waits on the disk, and a kill loses only what was not yet
committed, which `keep`'s callers have not passed on. Reads of pages happen
on the loop: a primary-key lookup of a key known (from the start) to be
stored, only when resuming.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import msgspec

from .items import DeadLetter

Mode = Literal["fresh", "resume", "replay"]
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS flow_pages (graph TEXT NOT NULL, scope TEXT NOT NULL, key TEXT NOT NULL,"
    " value BLOB NOT NULL, run_id TEXT, PRIMARY KEY (graph, scope, key)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS flow_dead_letters (graph TEXT NOT NULL, key TEXT NOT NULL, node TEXT,"
    " stage TEXT, endpoint TEXT, page INTEGER, position INTEGER, reason TEXT, raw TEXT, id TEXT,"
    " timestamp TEXT, run_id TEXT, PRIMARY KEY (graph, key))",
)
_LETTER_COLUMNS = "node, stage, endpoint, page, position, reason, raw, id, timestamp"
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def letter_key(letter: DeadLetter) -> str:
    """A dead letter's identity: where its record was, and who rejected it."""
    return "\x1f".join(map(str, (letter.node, letter.stage, letter.endpoint, letter.page, letter.position)))


class Journal:
    def __init__(self, path: Path, graph: str, mode: Mode = "fresh") -> None:
        self.path, self.graph, self.mode = path, graph, mode
        self.run_id = ""
        self.stored_letters: set[str] = set()  # keys of the dead letters this run stored
        self.failure: str | None = None  # the first write that failed (flush raises it)
        self._pending: list[tuple[str, tuple[Any, ...], asyncio.Future[None] | None]] = []
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(1, "flow-journal")
        self._write_db: sqlite3.Connection | None = None  # the thread's own
        self.db = sqlite3.connect(path, isolation_level=None, timeout=5)
        self.db.execute("PRAGMA journal_mode=WAL")
        for statement in _SCHEMA:
            self.db.execute(statement)
        if mode == "fresh":
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.execute("DELETE FROM flow_pages WHERE graph = ?", (graph,))
                self.db.execute("DELETE FROM flow_dead_letters WHERE graph = ?", (graph,))
        rows = self.db.execute("SELECT scope, key FROM flow_pages WHERE graph = ?", (graph,))
        self._stored = {(scope, key) for scope, key in rows} if mode == "resume" else set()

    @property
    def pages_stored(self) -> int:
        """Pages a resumed run may take from here."""
        return len(self._stored)

    # --- pages ------------------------------------------------------------------
    def recall(self, scope: str, key: str) -> bytes | None:
        if (scope, key) not in self._stored:
            return None
        row = self.db.execute(
            "SELECT value FROM flow_pages WHERE graph = ? AND scope = ? AND key = ?", (self.graph, scope, key)
        ).fetchone()
        return bytes(row[0]) if row is not None else None

    async def keep(self, scope: str, key: str, value: bytes) -> None:
        """Store `value` under `key`; returns once it is committed."""
        done = asyncio.get_running_loop().create_future()
        self._add("page", (self.graph, scope, key, value, self.run_id), done)
        await done

    # --- dead letters -------------------------------------------------------------
    def dead_letter(self, letter: DeadLetter) -> None:
        """Store a dead letter (with the next batch: a lost one is found again
        by the run that resumes, which passes its page through again)."""
        key = letter_key(letter)
        self.stored_letters.add(key)
        raw, rid = _encode(letter.raw), None if letter.id is None else _encode(letter.id)
        row = (letter.node, letter.stage, letter.endpoint, letter.page, letter.position, letter.reason)
        self._add("letter", (self.graph, key, *row, raw, rid, letter.timestamp, self.run_id), None)

    def letters(self, source: str | None = None, reason: str | None = None) -> list[DeadLetter]:
        """The graph's stored dead letters: of one source (its endpoint), and
        with `reason` in their reason, if given; in page and position order."""
        query = f"SELECT {_LETTER_COLUMNS} FROM flow_dead_letters WHERE graph = ?"
        args: list[Any] = [self.graph]
        if source is not None:
            query, args = query + " AND endpoint = ?", [*args, source]
        if reason is not None:
            query, args = query + " AND instr(reason, ?) > 0", [*args, reason]
        rows = self.db.execute(query + " ORDER BY endpoint, page, position", args).fetchall()
        return [_letter(*row) for row in rows]

    def forget(self, letters: Iterable[DeadLetter]) -> int:
        """Drop these dead letters from the store, but not one this run
        stored again (it failed again). Returns how many were dropped."""
        keys = [(self.graph, k) for k in map(letter_key, letters) if k not in self.stored_letters]
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("DELETE FROM flow_dead_letters WHERE graph = ? AND key = ?", keys)
        return len(keys)

    # --- the writer ---------------------------------------------------------------
    def start(self, run_id: str) -> None:
        """Called by the runtime as the run starts, on its loop."""
        self.run_id = run_id
        self._wake = asyncio.Event()
        self._writer = asyncio.create_task(self._write_batches(), name="journal")

    def _add(self, what: str, row: tuple[Any, ...], done: asyncio.Future[None] | None) -> None:
        if self._wake is None:
            raise RuntimeError("the journal is not started (Journal.start)")
        self._pending.append((what, row, done))
        self._wake.set()

    async def _write_batches(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            try:
                await asyncio.shield(loop.run_in_executor(self._thread, self._write, batch))
            except Exception as exc:  # a full disk, a damaged file: the run goes on (a resume
                self.failure = self.failure or f"{self.path}: {exc}"  # fetches these again)
            for _, _, done in batch:
                if done is not None and not done.done():
                    done.set_result(None)

    def _write(self, batch: list[tuple[str, tuple[Any, ...], Any]]) -> None:
        """On the journal's thread: one transaction for the whole batch."""
        if self._write_db is None:
            self._write_db = sqlite3.connect(
                self.path, isolation_level=None, timeout=30, check_same_thread=False
            )
            self._write_db.execute("PRAGMA synchronous=NORMAL")
        db = self._write_db
        pages = [row for what, row, _ in batch if what == "page"]
        letters = [row for what, row, _ in batch if what == "letter"]
        with db:
            db.execute("BEGIN IMMEDIATE")
            if pages:
                db.executemany("INSERT OR REPLACE INTO flow_pages VALUES (?, ?, ?, ?, ?)", pages)
            if letters:
                db.executemany(
                    f"INSERT OR REPLACE INTO flow_dead_letters (graph, key, {_LETTER_COLUMNS}, run_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    letters,
                )

    async def flush(self) -> None:
        """Write what is pending (the run's end: every stage has finished)."""
        if self._writer is None:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._add("flush", (), waiter)  # batches are written in order: all before it are in
        await waiter
        self._writer.cancel()
        await asyncio.gather(self._writer, return_exceptions=True)
        self._writer = None
        if self.failure is not None:
            raise JournalError(self.failure)

    def finish(self, completed: bool) -> None:
        """The run ended: a run that completed with nothing lost leaves no
        pages to resume from (a replay never touches them)."""
        if completed and self.mode != "replay":
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.execute("DELETE FROM flow_pages WHERE graph = ?", (self.graph,))

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        if self._write_db is not None:
            self._write_db.close()
        self.db.close()


def _letter(
    node: str, stage: str, endpoint: str, page: int | None, position: int | None, reason: str,
    raw: str, rid: str | None, timestamp: str,
) -> DeadLetter:  # fmt: skip
    return DeadLetter(
        node=node, stage=stage, endpoint=endpoint, page=page, position=position, reason=reason,
        raw=_decode(raw), id=None if rid is None else _decode(rid), timestamp=timestamp,
    )  # fmt: skip


class JournalError(Exception):
    """The journal could not be written."""
