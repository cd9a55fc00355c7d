"""The run's journal (flow.journal): the page log a resumed run reads, and
the dead-letter store `flow replay` reads, each through its lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from flow.items import DeadLetter
from flow.journal import Journal, PageLog
from flow.state import StateFile


def _letter(page: int, position: int, reason: str = "price missing", node: str = "shop") -> DeadLetter:
    return DeadLetter(node=node, stage="normalize", endpoint=node, page=page, position=position, reason=reason,
                      raw={"id": page * 100 + position, "price": None}, timestamp="2026-11-26T10:00:00.000Z")  # fmt: skip


async def _started(journal: Journal) -> Journal:
    journal.start("run-1")
    return journal


@settings(max_examples=40, deadline=None)
@given(entries=st.lists(st.binary(max_size=300), min_size=1, max_size=12), cut=st.integers(1, 10_000))
def test_a_log_cut_anywhere_gives_back_every_whole_entry_and_no_other(tmp_path_factory, entries, cut):
    """A kill may end the log anywhere in an entry: what a resume reads is
    exactly the entries written whole before that point."""
    path = tmp_path_factory.mktemp("log") / "pages.log"
    log = PageLog(path, resume=False)
    ends = []
    for i, value in enumerate(entries):
        log.put(f"k{i}".encode(), value)
        ends.append(path.stat().st_size)
    log.close()
    size = min(cut, ends[-1])
    os.truncate(path, size)
    again = PageLog(path, resume=True)
    whole = [i for i, end in enumerate(ends) if end <= size]
    assert sorted(again.index) == sorted(f"k{i}".encode() for i in whole)
    assert all(again.get(f"k{i}".encode()) == entries[i] for i in whole)
    assert path.stat().st_size == (ends[whole[-1]] if whole else 0)  # the cut entry is gone
    again.put(b"next", b"value")  # and what comes after it is read back
    again.close()
    assert PageLog(path, resume=True).get(b"next") == b"value"


def test_pages_are_taken_by_a_resume_and_go_when_a_run_completes(tmp_path):
    state = tmp_path / "state.db"

    async def run(mode, keep=(), completed=False):
        journal = await _started(Journal(state, "g.yaml", mode))
        found = {key: journal.recall("shop/fetch", key) for key in ("p0", "p1", "p2")}
        for key in keep:
            journal.keep("shop/fetch", key, key.encode() * 3)
        await journal.flush()
        journal.finish(completed)
        journal.close()
        return found

    assert asyncio.run(run("fresh", keep=["p0", "p1"])) == dict.fromkeys(("p0", "p1", "p2"))
    assert asyncio.run(run("resume", keep=["p2"])) == {"p0": b"p0p0p0", "p1": b"p1p1p1", "p2": None}
    assert asyncio.run(run("resume")) == {"p0": b"p0p0p0", "p1": b"p1p1p1", "p2": b"p2p2p2"}
    logs = sorted(tmp_path.glob("state.db-pages-*.log"))
    assert asyncio.run(run("replay", completed=True)) == dict.fromkeys(("p0", "p1", "p2"))  # it has none
    assert sorted(tmp_path.glob("state.db-pages-*.log")) == logs  # and leaves the log as it was
    assert asyncio.run(run("resume", completed=True))["p2"] == b"p2p2p2"  # this one completed
    assert list(tmp_path.glob("state.db-pages-*.log")) == []  # so its log is deleted
    assert asyncio.run(run("replay", completed=True)) == dict.fromkeys(("p0", "p1", "p2"))
    assert list(tmp_path.glob("state.db-pages-*.log")) == []  # a replay makes none
    assert asyncio.run(run("resume")) == dict.fromkeys(("p0", "p1", "p2"))
    asyncio.run(run("resume", keep=["p0"]))
    assert asyncio.run(run("fresh")) == dict.fromkeys(("p0", "p1", "p2"))  # a fresh run starts empty
    assert asyncio.run(run("resume", keep=["p1"], completed=False))["p0"] is None
    other = Journal(state, "other.yaml", "resume")
    assert other.recall("shop/fetch", "p1") is None  # per graph
    other.close()


def test_dead_letters_are_stored_once_per_place_and_a_replay_forgets_those_that_passed(tmp_path):
    state = tmp_path / "state.db"

    async def first():
        journal = await _started(Journal(state, "g.yaml", "fresh"))
        for position in range(4):
            journal.dead_letter(_letter(0, position))
        journal.dead_letter(_letter(0, 3, "price is negative"))  # found again (a resume): replaced
        journal.dead_letter(_letter(1, 0, node="other"))
        await journal.flush()
        journal.close()

    asyncio.run(first())
    journal = Journal(state, "g.yaml", "replay")
    assert len(journal.letters()) == 5
    assert [(d.page, d.position) for d in journal.letters(source="shop")] == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert [d.position for d in journal.letters(reason="negative")] == [3]
    assert journal.letters(source="shop")[0].raw == {"id": 0, "price": None}

    async def replay():
        await _started(journal)
        journal.dead_letter(_letter(0, 1, "title missing"))  # failed again, with a new reason
        await journal.flush()
        return journal.settle(journal.letters(source="shop"))

    assert asyncio.run(replay()) == 3
    assert [(d.endpoint, d.position, d.reason) for d in journal.letters()] == [
        ("other", 0, "price missing"), ("shop", 1, "title missing")
    ]
    journal.close()
    fresh = Journal(state, "g.yaml", "fresh")  # a fresh run of the graph starts with none
    assert fresh.letters() == []
    fresh.close()


def test_a_journal_that_cannot_be_written_is_a_loss_of_the_run_not_its_end(tmp_path, monkeypatch):
    """Pages that cannot be kept are fetched again by a resume; dead letters
    that cannot be stored would be missing from the store a replay reads:
    the run goes on and delivers, then says so and does not exit 0."""
    from flow.testing import run_graph
    from stages.records.items import Records

    def full_disk(self, rows):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Journal, "_write", full_disk)
    journal = Journal(tmp_path / "state.db", "g.yaml", "fresh")
    os.close(journal.pages._fd)  # the page log fails too
    journal.pages._fd = os.open(os.devnull, os.O_RDONLY)
    batch = Records.of("shop", 0, [(0, {"id": 1, "title": "Lamp", "price": 5}), (1, {"id": 2, "title": "Bad"})])
    sinks: dict[str, list] = {}
    result = run_graph(
        "version: 1\nnodes:\n"
        "  shop: {pipe: [{testing_source: {name: s}}, {normalize: {preset: dummyjson}}]}\n"
        "  out: {from: shop, pipe: [testing_sink]}\n",
        sources={"s": [batch]}, sinks=sinks, out_dir=tmp_path, journal=journal,
    )  # fmt: skip
    journal.keep("shop/fetch", "p0", b"body")  # noted, not raised
    journal.close()
    assert [p.id for b in sinks["out"] for p in b.products] == ["shop:1"]  # the run delivered
    assert result.status == "completed" and result.counters["shop"]["dead_letters"] == 1
    assert any("journal could not be written (" in line and "disk is full" in line for line in result.lost)
    assert [e["error"] for e in result.errors] == ["journal_failed"]
    assert result.exit_code() == 1


def test_a_state_file_of_an_earlier_flow_gains_the_mode_column(tmp_path):
    path = tmp_path / "state.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE flow_runs (run_id TEXT PRIMARY KEY, graph TEXT NOT NULL, pid INTEGER,"
                   " status TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT)")  # fmt: skip
        db.execute("INSERT INTO flow_runs VALUES ('r0', 'g.yaml', 1, 'interrupted', 'then', 'then')")
        db.commit()
    state = StateFile(path)
    try:
        assert state.last_unfinished("g.yaml").run_id == "r0"
        state.started("r1", "g.yaml", "now", "replay")  # a replay is not the graph's last run
        assert state.last_unfinished("g.yaml").run_id == "r0"
    finally:
        state.close()


def test_keep_and_recall_are_what_a_stage_sees(tmp_path):
    from flow.context import RunState, StageContext

    run = RunState()
    ctx = StageContext("shop", "fetch", 2, Path(tmp_path), run)
    assert not ctx.keeping and ctx.recall("p0") is None
    ctx.keep("p0", b"ignored")  # no journal: nothing
    run.journal = Journal(tmp_path / "state.db", "g.yaml", "fresh")
    assert ctx.keeping
    ctx.keep("p0", b"body")
    run.journal.close()
    run.journal = Journal(tmp_path / "state.db", "g.yaml", "resume")
    assert ctx.recall("p0") == b"body"
    assert StageContext("shop", "parse", 3, Path(tmp_path), run).recall("p0") is None  # scoped to its stage
    run.journal.close()
