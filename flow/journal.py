"""The run's journal beside the state file (flow.state): what a resumed run
takes instead of fetching again, and the dead letters a replay pushes back.

Pages: an append-only log per graph, `STATE-pages-<graph hash>.log`. Each
entry is what a stage obtained at a cost (fetch: a page's status, headers
and body) under a key (its URL), written with one write(2) before the stage
passes it on (`ctx.keep`): once it returns, a kill of the process cannot
lose it (the kernel holds it; a power cut can, as with SQLite's
synchronous=NORMAL). An entry cut short by a kill is dropped when the log is
next read. A resumed run reads the log's index at its start and takes
entries by key (`ctx.recall`); it appends what it fetches.

    entry: key length, value length (two little-endian uint32), key, value

Measured (1,000 pages of 30 kB, bench/throughput.py's shape): SQLite, a
blob row per page committed in batches on a thread, cost 0.3 s of CPU per
run (its DELETE at the end included) and held every fetch slot for a thread
round trip, which cut flow's throughput by a quarter; the log costs one
write per page and an unlink.

Dead letters: a table in the state file, written on a thread of their own in
batches (one transaction each):

    flow_dead_letters  graph, key (node, stage, endpoint, page, position),
                       node, stage, endpoint, page, position, reason, raw
                       (JSON), id (JSON), timestamp, run_id

Lifecycle, by the run's mode:
    fresh   forgets the graph's pages and dead letters, then stores its own
    resume  keeps them: a page found is taken from the log, the rest
            fetched; a dead letter found again replaces its row
    replay  reads dead letters (`letters`); when it ends whole, stores the
            ones that failed again (same key, new reason) and forgets the
            ones that passed, in one transaction (`settle`); else changes
            nothing
A run that completes with nothing lost deletes its page log (nothing is
left to resume); its dead letters stay for `flow replay`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import struct
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import msgspec

from .items import DeadLetter

Mode = Literal["fresh", "resume", "replay"]
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS flow_dead_letters (graph TEXT NOT NULL, key TEXT NOT NULL, node TEXT,"
    " stage TEXT, endpoint TEXT, page INTEGER, position INTEGER, reason TEXT, raw TEXT, id TEXT,"
    " timestamp TEXT, run_id TEXT, PRIMARY KEY (graph, key))"
)
_LETTER_COLUMNS = "node, stage, endpoint, page, position, reason, raw, id, timestamp"
_STORE = (
    f"INSERT OR REPLACE INTO flow_dead_letters (graph, key, {_LETTER_COLUMNS}, run_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_ENTRY = struct.Struct("<II")
_BATCH_SECONDS, _BATCH_ROWS = 0.05, 512  # dead letters are written at most this late, or this many at once
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class PageLog:
    """The append-only log of kept pages (see the module doc)."""

    def __init__(self, path: Path, resume: bool) -> None:
        self.path = path
        self.index: dict[bytes, tuple[int, int]] = {}  # key -> (offset of the value, its length)
        if not resume:
            path.unlink(missing_ok=True)
        elif path.exists():
            self._read_index()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)

    def _read_index(self) -> None:
        """Every complete entry's place; the file is cut after the last one
        (a kill may have left one cut short)."""
        with self.path.open("rb") as f:
            size, offset = os.fstat(f.fileno()).st_size, 0
            while offset + _ENTRY.size <= size:
                f.seek(offset)
                key_length, value_length = _ENTRY.unpack(f.read(_ENTRY.size))
                end = offset + _ENTRY.size + key_length + value_length
                if end > size:
                    break
                key = f.read(key_length)
                self.index[key] = (offset + _ENTRY.size + key_length, value_length)
                offset = end
        if offset < size:
            os.truncate(self.path, offset)

    def put(self, key: bytes, value: bytes) -> None:
        entry = memoryview(_ENTRY.pack(len(key), len(value)) + key + value)
        while entry:  # a regular file takes it whole but for a full disk (OSError)
            entry = entry[os.write(self._fd, entry) :]

    def get(self, key: bytes) -> bytes | None:
        found = self.index.get(key)
        return None if found is None else os.pread(self._fd, found[1], found[0])

    def close(self, delete: bool = False) -> None:
        os.close(self._fd)
        if delete:
            self.path.unlink(missing_ok=True)


def letter_key(letter: DeadLetter) -> str:
    """A dead letter's identity: where its record was, and who rejected it
    (with the record's digest when the stage did not say where it was: such
    letters are told apart by content)."""
    place = (letter.node, letter.stage, letter.endpoint, letter.page, letter.position)
    if letter.page is None or letter.position is None:
        place += (hashlib.sha256(_encode(letter.raw)).hexdigest()[:24],)
    return "\x1f".join(map(str, place))


class Journal:
    def __init__(self, path: Path, graph: str, mode: Mode = "fresh") -> None:
        self.path, self.graph, self.mode = path, graph, mode
        self.run_id = ""
        self.failure: str | None = None  # the first write that failed (flush raises it)
        # A replay's dead letters: held until it ends, then stored with the
        # passed ones forgotten, in one transaction (`settle`), or not at all.
        self.replayed: dict[str, tuple[Any, ...]] = {}
        self._pending: list[tuple[Any, ...] | asyncio.Future[None]] = []
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._write_db: sqlite3.Connection | None = None  # the thread's own
        self._done = False  # the run completed: its page log goes
        self.pages: PageLog | None = None  # a replay fetches nothing: no log
        self.db = sqlite3.connect(path, isolation_level=None, timeout=5)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(_SCHEMA)
            if mode == "fresh":
                self.db.execute("DELETE FROM flow_dead_letters WHERE graph = ?", (graph,))
            if mode != "replay":
                digest = hashlib.sha256(graph.encode()).hexdigest()[:16]
                log = path.with_name(f"{path.name}-pages-{digest}.log")
                self.pages = PageLog(log, resume=mode == "resume")
        except BaseException:
            self.db.close()
            raise
        self._thread = ThreadPoolExecutor(1, "flow-journal")

    @property
    def pages_stored(self) -> int:
        """Pages a resumed run may take from the log."""
        return len(self.pages.index) if self.pages is not None else 0

    # --- pages ------------------------------------------------------------------
    def recall(self, scope: str, key: str) -> bytes | None:
        if self.pages is None or not self.pages.index:
            return None
        return self.pages.get(f"{scope}\x1f{key}".encode())

    def keep(self, scope: str, key: str, value: bytes) -> None:
        """Append `value` under `key` to the page log: safe from a kill once
        this returns. A failure (a full disk) is noted, not raised: the run
        goes on, and a resume fetches the page again."""
        if self.failure is not None or self.pages is None:
            return
        try:
            self.pages.put(f"{scope}\x1f{key}".encode(), value)
        except OSError as exc:
            self.failure = f"{self.pages.path}: {exc}"

    # --- dead letters -------------------------------------------------------------
    def dead_letter(self, letter: DeadLetter) -> None:
        """Store a dead letter (with the next batch: a lost one is found again
        by the run that resumes, which passes its page through again); in a
        replay, when it ends (`settle`)."""
        key = letter_key(letter)
        raw, rid = _encode(letter.raw), None if letter.id is None else _encode(letter.id)
        place = (letter.node, letter.stage, letter.endpoint, letter.page, letter.position, letter.reason)
        row = (self.graph, key, *place, raw, rid, letter.timestamp, self.run_id)
        if self.mode == "replay":
            self.replayed[key] = row
        else:
            self._add(row)

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

    def settle(self, letters: Iterable[DeadLetter]) -> int:
        """A replay of `letters` ended whole: in one transaction, forget those
        it did not reject again and store those it did (new reason, new
        place if a later stage rejected them). Returns how many it forgot."""
        keys = [(self.graph, k) for k in map(letter_key, letters) if k not in self.replayed]
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("DELETE FROM flow_dead_letters WHERE graph = ? AND key = ?", keys)
            self.db.executemany(_STORE, list(self.replayed.values()))
        return len(keys)

    # --- the writer of dead letters ----------------------------------------------------
    def start(self, run_id: str) -> None:
        """Called by the runtime as the run starts, on its loop."""
        self.run_id = run_id
        self._wake = asyncio.Event()
        self._writer = asyncio.create_task(self._write_batches(), name="journal")

    def _add(self, entry: tuple[Any, ...] | asyncio.Future[None]) -> None:
        if self._wake is None:
            raise RuntimeError("the journal is not started (Journal.start)")
        self._pending.append(entry)
        # A batch per 50 ms or per 512 rows, not a thread hop per page with a dead letter.
        if isinstance(entry, asyncio.Future) or len(self._pending) >= _BATCH_ROWS:
            self._wake.set()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(_BATCH_SECONDS, self._wake_writer)

    def _wake_writer(self) -> None:
        self._timer = None
        if self._wake is not None:
            self._wake.set()

    async def _write_batches(self) -> None:
        """Batches in order, one at a time; a future in a batch (`flush`) is
        resolved once the rows before it are written."""
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            rows = [entry for entry in batch if isinstance(entry, tuple)]
            try:
                if rows:
                    await asyncio.shield(loop.run_in_executor(self._thread, self._write, rows))
            except Exception as exc:  # a full disk, a damaged file: the run goes on
                self.failure = self.failure or f"{self.path}: {exc}"
            for entry in batch:
                if isinstance(entry, asyncio.Future) and not entry.done():
                    entry.set_result(None)

    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        """On the journal's thread: one transaction for the whole batch."""
        if self._write_db is None:
            self._write_db = sqlite3.connect(
                self.path, isolation_level=None, timeout=30, check_same_thread=False
            )
            self._write_db.execute("PRAGMA synchronous=NORMAL")
        with self._write_db as db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(_STORE, rows)

    async def flush(self) -> None:
        """Write what is pending (the run's end: every stage has finished);
        raises JournalError if a write failed during the run."""
        if self._writer is None:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._add(waiter)
        await waiter
        self._writer.cancel()
        await asyncio.gather(self._writer, return_exceptions=True)
        self._writer = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.failure is not None:
            raise JournalError(self.failure)

    def finish(self, completed: bool) -> None:
        """The run ended: one that completed with nothing lost leaves no pages
        to resume from (a replay never touches them)."""
        self._done = completed and self.mode != "replay"

    def close(self) -> None:
        try:
            self._thread.shutdown(wait=True)
            if self._write_db is not None:
                self._write_db.close()
            self.db.close()
        finally:
            if self.pages is not None:
                self.pages.close(delete=self._done)


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
