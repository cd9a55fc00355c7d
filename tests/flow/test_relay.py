"""The fan-in of a cluster run without Ray (flow.relay): shards as runtimes
on one loop, each relaying to the driver through a bounded channel that the
driver pulls into spools, then the driver's part. The whole run's report
must say what a run in one process says of the same servers."""

from __future__ import annotations

import asyncio
import copy
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flow.cluster import part
from flow.registry import default_registry
from flow.relay import Channel, Spool, driver_nodes, driver_part, figures, install, pull, renamed, with_relays
from flow.runtime import Runtime
from flow.spec import parse_spec

GRAPH = """
version: 1
run: {deadline: 30s}
nodes:
  a:
    pipe:
      - paginate: {url: "${mocks.a.url}/products", style: skip_limit, page_size: 20}
      - fetch
      - parse: {schema: dummyjson}
      - normalize: {preset: dummyjson}
  b:
    pipe:
      - paginate: {url: "${mocks.b.url}/api/v1/products", style: offset, page_size: 20}
      - fetch
      - parse: {schema: platzi}
      - normalize: {preset: platzi}
  products:
    from: [a, b]
    pipe:
      - merge
      - dedupe: {key: id}
      - window: {name: w, time: timestamp, every: 28d, by: category, lateness: 365d}
  page:
    from: [products, products.windows, "*.errors", "*.dead_letters"]
    pipe:
      - report: {path: report.html}
  db:
    from: products
    pipe:
      - sqlite: {path: products.db}
"""


def _actor(channel: Channel, token: str) -> Any:
    """What the driver calls on a shard's actor: `pull.remote(n)`."""

    async def remote(most: int) -> tuple[str, list[Any], bool]:
        items, ended = await channel.take(most)
        return token, items, ended

    return SimpleNamespace(pull=SimpleNamespace(remote=remote))


def _spec(servers: dict[str, Any]) -> Any:
    return parse_spec(GRAPH, default_registry(), env={}, refs={n: s.url for n, s in servers.items()})


async def _cluster_run(servers: dict[str, Any], out: Path, room: int) -> tuple[list[dict[str, Any]], Any]:
    """Two shards (a, b) relaying to the driver, then the driver's part."""
    spools, shards, began = [], [], 0.0
    for i, source in enumerate(("a", "b")):
        channel = Channel(room)
        runtime = Runtime(with_relays(part(_spec(servers), [source]), channel), out_dir=out / f"shard-{i}")
        spools.append(Spool(out / ".relay" / f"shard-{i}"))
        shards.append((runtime, channel))

    async def shard(runtime: Runtime, channel: Channel) -> dict[str, Any]:
        try:
            result = await runtime.run()
        finally:
            await channel.close()
        report = result.report()  # as a shard reports (flow.cluster.ShardRunner)
        ledger = {source: renamed(row) for source, row in report["ledger"].items()}
        return {**report, "ledger": ledger, "figures": figures(runtime, began), "most": channel.most}

    runs = [shard(r, c) for r, c in shards]
    pulls = [pull(_actor(c, f"shard-{i}"), spool) for i, ((_, c), spool) in enumerate(zip(shards, spools, strict=True))]
    reports = (await asyncio.gather(*runs, *pulls))[:2]
    spec = _spec(servers)
    driver = Runtime(driver_part(copy.copy(spec), spools), out_dir=out)
    install(driver, spec, reports, began, "completed")
    await driver.run()
    return reports, spools


def _rows(html: str) -> dict[str, list[str]]:
    table = re.search(r"<section id='sources'>.*?</section>", html, re.S)
    assert table is not None
    return {cells[0]: cells[1:] for cells in (re.findall(r"<td[^>]*>([^<]*)</td>", row)
            for row in re.findall(r"<tr>(.*?)</tr>", table[0])) if cells}  # fmt: skip


def _bars(html: str) -> list[str]:
    """The category chart's bars and every window point, by their tooltips."""
    return re.findall(r"<title>([^<]*)</title>", html)


async def test_the_driver_report_says_what_a_run_in_one_process_says(start_mock, tmp_path):
    servers = {"a": await start_mock(style="dummyjson", products=130, seed=3),
               "b": await start_mock(style="platzi", products=90, seed=4)}  # fmt: skip
    plain = await Runtime(_spec(servers), out_dir=tmp_path / "plain").run()
    assert plain.status == "completed"
    reports, spools = await _cluster_run(servers, tmp_path / "cluster", room=4)
    whole = (tmp_path / "cluster" / "report.html").read_text()
    alone = (tmp_path / "plain" / "report.html").read_text()
    # The sources table: pages, records, products reaching the report, dead letters, duplicates.
    assert _rows(whole) == _rows(alone) and set(_rows(whole)) == {"a", "b"}
    assert int(_rows(whole)["a"][3]) > 100
    # Category bars and window points: the same, but for a window's average, merged from two shards'
    # averages rounded to the cent (one window per shard for the same month and category).
    # Sorted: categories of equal counts are drawn in the order they first came.
    cents = re.compile(r"avg [\d,]+\.\d\d")
    assert sorted(cents.sub("avg", t) for t in _bars(whole) if "request" not in t) == sorted(
        cents.sub("avg", t) for t in _bars(alone) if "request" not in t)
    # The channel held at most its room; every shard relayed (batches as tallies, windows, errors).
    assert all(0 < r["most"] <= 4 for r in reports) and all(s.items > 0 and s.processes == 1 for s in spools)
    assert not (tmp_path / "cluster" / "page").exists() and not list((tmp_path / "cluster").glob("shard-*/report.html"))


def test_a_shard_part_relays_in_place_of_each_driver_node():
    refs = {"a": "http://127.0.0.1:1", "b": "http://127.0.0.1:2"}
    spec = parse_spec(GRAPH, default_registry(), env={}, refs=refs)
    assert driver_nodes(spec) == ["page"]
    shard = with_relays(part(parse_spec(GRAPH, default_registry(), env={}, refs=refs), ["a"]), Channel())
    assert sorted(shard.nodes) == ["_relay_page", "a", "db", "products"]
    assert shard.nodes["_relay_page"].inputs == ["products", "products.windows", "*.errors", "*.dead_letters"]
    driver = driver_part(parse_spec(GRAPH, default_registry(), env={}, refs=refs), [])
    assert {n: node.inputs for n, node in driver.nodes.items()} == {"_gather_page": [], "page": ["_gather_page"]}


def test_relay_rows_name_the_nodes_they_stand_for():
    row = {"records": {"expected": {"_relay_page": 3, "db": 3}, "written": {"_relay_page": 3, "db": 3},
                       "unaccounted": {"_relay_page": 0, "db": 0}, "received": 3}}  # fmt: skip
    assert renamed(row)["records"]["written"] == {"page": 3, "db": 3}


@settings(max_examples=40, deadline=None)
@given(room=st.integers(1, 6), counts=st.lists(st.integers(0, 9), min_size=1, max_size=6),
       most=st.integers(1, 5))  # fmt: skip
def test_a_channel_never_holds_more_than_its_room_and_loses_nothing(room, counts, most):
    """Producers put concurrently while one taker takes `most` at a time:
    every item arrives once, each producer's in order, the channel never
    held more than `room`, and the end is said only after the last item."""

    async def scenario() -> None:
        channel = Channel(room)

        async def produce(p: int, n: int) -> None:
            for i in range(n):
                await channel.put(f"p{p}", i)

        async def produce_all() -> None:
            await asyncio.gather(*(produce(p, n) for p, n in enumerate(counts)))
            await channel.close()

        got: list[tuple[str, Any]] = []
        producer = asyncio.ensure_future(produce_all())
        while True:
            items, ended = await channel.take(most)
            assert len(items) <= most
            got += items
            if ended:
                break
        await producer
        assert channel.most <= room
        for p, n in enumerate(counts):
            assert [i for to, i in got if to == f"p{p}"] == list(range(n))
        assert len(got) == sum(counts)

    asyncio.run(scenario())


def test_a_spool_keeps_only_what_the_last_process_relayed(tmp_path):
    """A shard's process that died ran its part partly; the process started
    again runs it from the start: only its items count."""
    spool = Spool(tmp_path / "s")
    spool.add(1, [("page", "x1"), ("other", "y1")])
    spool.add(1, [("page", "x2")])
    spool.add(2, [("page", "z1")])  # the restarted process
    spool.add(2, [("page", "z2"), ("other", "y2")])
    spool.close()
    assert list(spool.read("page")) == ["z1", "z2"] and list(spool.read("other")) == ["y2"]
    assert (spool.items, spool.processes) == (3, 2)
    spool.discard()
    assert not tmp_path.joinpath("s").exists()


async def test_a_pull_from_an_actor_gone_says_why(tmp_path):
    class Gone:
        class pull:  # the shape of a Ray actor method
            @staticmethod
            async def remote(most: int) -> Any:
                raise RuntimeError("The actor died unexpectedly before finishing this task.")

    spool = Spool(tmp_path / "s")
    await pull(Gone(), spool)
    assert spool.broken == "RuntimeError: The actor died unexpectedly before finishing this task."


async def test_a_shard_status_never_waits_and_only_the_newest_is_taken():
    """Statuses (for the driver's --status-port) take no room: offered to a
    full channel they do not wait, and one not yet taken is replaced."""
    channel = Channel(room=1)
    await channel.put("page", "item")
    for second in range(3):
        await asyncio.wait_for(channel.offer({"elapsed": second}), timeout=1)
    assert await channel.take() == ([("page", "item"), ("_status", {"elapsed": 2})], False)
    await channel.close()
    assert await channel.take() == ([], True)


def test_the_cluster_status_names_each_node_by_its_shard(tmp_path):
    from flow.cluster_status import merged

    def status(state: str, elapsed: float, pages: int) -> dict[str, Any]:
        node = {"counters": {"pages": pages}, "items_out": pages}
        return {"state": state, "stopped": None, "elapsed": elapsed, "nodes": {"a": node, "products": node},
                "endpoints": {f"http://x/{pages}": {"breaker": "closed"}}}  # fmt: skip

    spools = [Spool(tmp_path / "0"), Spool(tmp_path / "1"), Spool(tmp_path / "2")]
    spools[0].status, spools[1].status = status("running", 3.0, 4), status("stopping", 2.5, 7)
    whole = merged(spools, [0, 1, 2], "run", "g.yaml", "running")  # shard 2 has sent nothing yet
    assert list(whole["nodes"]) == ["shard-0/a", "shard-0/products", "shard-1/a", "shard-1/products"]
    assert whole["nodes"]["shard-1/a"]["counters"] == {"pages": 7}
    assert (whole["state"], whole["elapsed"], len(whole["endpoints"])) == ("stopping", 3.0, 2)


async def test_a_shard_whose_part_cannot_start_still_ends_its_channel(tmp_path):
    """A graph a shard cannot read (or an output it cannot make) raises in
    `run`: the driver's pulls must still end, not wait on the channel."""
    from flow.cluster import ShardRunner

    shard = ShardRunner()
    with pytest.raises(Exception, match="version"):
        await shard.run("version: 7\nnodes: {}\n", "g.yaml", [], {}, {}, [], str(tmp_path / "s"), "c")
    assert await asyncio.wait_for(shard.pull(10), timeout=1) == (shard.token, [], True)


async def test_a_pull_that_never_ends_is_given_up_and_said(tmp_path, monkeypatch):
    """The process that reported died and a pull went to a fresh one, whose
    channel never ends: given up after the grace, and a loss; a spool whose
    items came from another process than the reporting one is one too."""
    from flow.cli import cluster

    monkeypatch.setattr(cluster, "PULL_GRACE", 0.05)
    hung, other, fine = Spool(tmp_path / "h"), Spool(tmp_path / "o"), Spool(tmp_path / "f")
    other.add("earlier", [("page", 1)])
    fine.add("same", [("page", 1)])
    pulls = [asyncio.ensure_future(asyncio.Event().wait()), _done(), _done()]
    reports = [{"token": "x"}, {"token": "later"}, {"token": "same"}]
    await cluster._pulled(pulls, [hung, other, fine], reports)
    assert "did not end within 0.05s" in hung.broken and "another" not in fine.broken
    assert other.broken == "it relayed from a process other than the one that reported" and not fine.broken


def _done() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


async def test_an_actor_unavailable_for_a_while_is_asked_again(tmp_path):
    class RayActorError(Exception):
        pass

    class ActorUnavailableError(RayActorError):  # as Ray names it
        pass

    answers: list[Any] = [ActorUnavailableError("busy"), ActorUnavailableError("busy"),
                          ("t", [("page", 1)], False), ("t", [("page", 2)], True)]  # fmt: skip

    class Flaky:
        class pull:  # the shape of a Ray actor method
            @staticmethod
            async def remote(most: int) -> Any:
                answer = answers.pop(0)
                if isinstance(answer, Exception):
                    raise answer
                return answer

    spool = Spool(tmp_path / "s")
    await pull(Flaky(), spool, backoff=0.0)
    assert list(spool.read("page")) == [1, 2] and not spool.broken


async def test_a_line_said_in_a_shard_comes_first_and_never_waits():
    """ctx.say in a shard (a choice made for the user) reaches the driver
    even when the channel is full, ahead of the items; the channel ends
    only after every line said."""
    channel = Channel(room=1)
    await channel.put("page", "item")
    channel.say("s1: paginate: style skip_limit")
    await channel.close()
    items, ended = await channel.take()
    assert items == [("_say", "s1: paginate: style skip_limit"), ("page", "item")] and ended


def test_the_final_table_of_a_cluster_run_comes_from_the_statuses():
    from flow.cli.progress import status_rows

    def node(items_in: int | None, pages: int, breaker: str = "closed") -> dict[str, Any]:
        return {"stages": [{"stage": "paginate", "items_in": items_in, "items_out": pages + 1}],
                "counters": {"pages": pages, "records": pages * 20, "probes": 1}, "errors": 0,
                "endpoints": {"http://x": {"breaker": breaker}}}  # fmt: skip

    status = {"nodes": {"shard-0/a": node(None, 3), "shard-0/products": node(9, 0),
                        "shard-1/b": node(None, 5, "open")}}  # fmt: skip
    assert status_rows(status) == [("a", "3/3", "60", "0", "0", "0", "0", "closed"),
                                   ("b", "5/5", "100", "0", "0", "0", "0", "open")]  # fmt: skip
