"""The fault matrix: one graph (paginate -> rate_limit -> fetch -> parse ->
normalize -> dedupe -> a record sink) against servers built to break it,
every case judged the same way by what the servers saw and hold:

    conservation  the ids out == the ids served in good pages, none twice (and,
                  where nothing may be lost, == every id the server holds,
                  defects aside, which are dead letters)
    ledger        pages planned = fetched + failed + abandoned, fetched == the
                  distinct pages answered with a good body; records received =
                  dead letters + duplicates + filtered + written
    exit code     `flow run`'s: 0 only when nothing was lost
    rate          no sliding 1 s window over the limit at the server, retries
                  and redirect hops included
    wall time     within the fetch settings' schedule (a dead endpoint must not
                  hold the run to its 10-minute deadline); a loss is a few
                  summarising error records, not one per record

Servers are the mocks (fault knobs) or `Scripted`: a loopback API in any of
paginate's five styles that logs every request and keeps its own truth.
Everything runs on virtual time (flow.testing), so minutes take milliseconds.
"""

from __future__ import annotations

import asyncio
import math
import random
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Protocol

import pytest
from aiohttp import web

from flow.graph import check
from flow.registry import Registry, default_registry
from flow.runtime import Runtime
from flow.spec import parse_spec
from flow.testing import list_kinds, run_virtual
from mocks import LoopClock, MockServer, ServerSpec, windows_over_limit
from tests import loopback

# The fetch settings of every case, and the schedule they imply.
RATE, SPAN = 5, 1.05  # rate_limit 5/s: at most RATE sends per window + margin (0.05 s)
RETRIES, BACKOFF, BACKOFF_CAP = 3, 0.1, 1.0  # attempts = retries + 1
FAILURES, COOLDOWN = 3, 2.0  # the breaker opens after 3 failures in a row, probes after 2 s
GIVE_UP, PREFETCH, CONCURRENCY = 4, 4, 4  # paginate's defaults, fetch's requests in flight
ATTEMPTS = RETRIES + 1
SLACK = 1.0  # latency and the hand-offs between stages
FETCH = (
    f"{{fetch: {{concurrency: {CONCURRENCY}, retry: {{retries: {RETRIES}, backoff: {BACKOFF}s, max: {BACKOFF_CAP}s}},"
    f" breaker: {{failures: {FAILURES}, cooldown: {COOLDOWN}s}}}}}}"
)
# Pages that can fail before a walk stops: GIVE_UP in a row end it, and the
# pages already planned (the fetch's CONCURRENCY, offset's PREFETCH, one
# in hand) fail too. A cursor walk, strictly sequential, stops at the first.
FAILING = GIVE_UP + max(PREFETCH, CONCURRENCY) + 1
# Requests a dead endpoint gets: the first attempts in flight when the
# breaker opens (at most FAILURES in a row, or one per page in flight), then
# ATTEMPTS probes.
DEAD_REQUESTS = max(FAILURES, max(PREFETCH, CONCURRENCY) + 1) + ATTEMPTS


def sends(n: int) -> float:
    """The longest the limiter can take for n sends: RATE of them per SPAN."""
    return math.ceil(n / RATE) * SPAN


def healthy(requests: int, waits: float = 0.0) -> float:
    """Wall-time bound of a walk of `requests` good sends (overshoot included),
    plus `waits`: the waits the case imposes (Retry-After, stalls)."""
    return sends(requests) + waits + SLACK


def dead(good: int = 0) -> float:
    """Wall-time bound when the endpoint stays down: the breaker opens within
    the backoffs of the first FAILURES failures (each at most BACKOFF_CAP),
    then lets one probe through every COOLDOWN (each probe also waits at most
    one limiter slot, SPAN); after ATTEMPTS failed probes in a row every page
    still waiting fails, and every later one at once. Plus the sends of the
    `good` pages. However many pages were in flight: the breaker's schedule."""
    return sends(good) + FAILURES * BACKOFF_CAP + ATTEMPTS * (COOLDOWN + SPAN) + SLACK


# --- the servers: scripted, the mocks, none; each gives its evidence -----------

FIRST = {"page": "1", "link": "1", "skip_limit": "0", "offset": "0", "cursor": ""}  # page 0's position
ITEMS = {"page": "data", "skip_limit": "products", "cursor": "data"}  # else the body is a bare list
HTML = b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1><hr>cloudfront</body></html>"
Answer = web.Response | None


@dataclass
class Evidence:
    times: list[float]  # every request's arrival at any server (retries and hops included)
    answered: int  # distinct pages answered with a good body
    served: set[str]  # ids that went out in good pages
    held: set[str]  # ids the server holds (defects aside)
    defects: int = 0  # defective records served (each must be a dead letter)
    log: list[Any] = field(default_factory=list)  # the scripted servers' logs, for a case's own checks


class World(Protocol):
    async def start(self) -> str: ...  # the URL paginate walks
    async def close(self) -> None: ...
    def evidence(self) -> Evidence: ...


class Scripted(loopback.PagedAPI):
    """A loopback API in any paginate style, with its log and truth."""

    def evidence(self) -> Evidence:
        return Evidence([t for t, *_ in self.log], len(self.answered), self.served, self.held, log=self.log)


def unavailable(server: loopback.PagedAPI, request: web.Request, key: str, attempt: int) -> Answer:
    """Page 0 answers, then the endpoint dies: 503 for every other page."""
    return None if key == FIRST[server.style] else web.Response(status=503)


def retry_after_once(server: loopback.PagedAPI, request: web.Request, key: str, attempt: int) -> Answer:
    """Every page's first attempt: 503 with `Retry-After: 2`."""
    return web.Response(status=503, headers={"Retry-After": "2"}) if attempt == 0 else None


def html_once(server: loopback.PagedAPI, request: web.Request, key: str, attempt: int) -> Answer:
    """Page 2's first attempt (the only time): an HTML error page with 200."""
    return web.Response(body=HTML, content_type="text/html") if (key, attempt) == ("2", 0) else None


def redirect_loop(server: loopback.PagedAPI, request: web.Request, key: str, attempt: int) -> Answer:
    """Every request is sent back to itself."""
    return web.Response(status=302, headers={"Location": request.path_qs})


class Away(Scripted):
    """Home: every page a 307 to the same path on another origin (another
    port), which holds the records. The log: home's, then the other's."""

    def __init__(self, n: int) -> None:
        super().__init__("link", 0, script=self.away)
        self.other = Scripted("link", n)

    def away(self, server: loopback.PagedAPI, request: web.Request, key: str, attempt: int) -> Answer:
        return web.Response(status=307, headers={"Location": self.there + request.path_qs})

    async def start(self) -> str:
        self.there = (await self.other.start()).removesuffix("/items")
        return await super().start()

    async def close(self) -> None:
        await super().close()
        await self.other.close()

    def evidence(self) -> Evidence:
        other = self.other.evidence()
        return replace(other, times=[t for t, *_ in self.log] + other.times, log=[self.log, self.other.log])


MOCKS = {"dummyjson": ("/products", "skip_limit", "skip"), "platzi": ("/api/v1/products", "offset", "offset"),
         "reqres": ("/api/products", "page", "page"), "jsonserver": ("/products", "link", "_page"),
         "cursor": ("/items", "cursor", "cursor")}  # fmt: skip


class Mock(MockServer):
    """A mock server with fault knobs; its truth: the ids it served in good
    pages, every id it holds but the defects (dead letters) and copies."""

    def __init__(self, preset: str, **knobs: Any) -> None:
        super().__init__(ServerSpec(style=preset, rate_limit="off", **knobs), clock=LoopClock())
        self.preset = preset

    async def start(self) -> str:
        return await super().start() + MOCKS[self.preset][0]

    def evidence(self) -> Evidence:
        stats, position, id_of = self.stats(), MOCKS[self.preset][2], self.style.id_of
        requests, truth, served = stats["requests"], stats["truth"]["catalogue"], stats["truth"]["served"]
        good = {r["query"].get(position) for r in requests if r["status"] == 200 and not r["fault"]}
        unheld = {m["index"] for m in truth["malformed"]} | {d["index"] for d in truth["duplicates"]}
        held = {str(id_of(i + 1)) for i in range(truth["total"]) if i not in unheld}
        return Evidence([r["t"] for r in requests], len(good), {str(i) for i in served["valid"]}, held,
                        len(served["malformed"]))  # fmt: skip


class Refused:
    """A loopback port nobody listens on: every connection is refused."""

    async def start(self) -> str:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return f"http://127.0.0.1:{probe.getsockname()[1]}/items"

    async def close(self) -> None:
        pass

    def evidence(self) -> Evidence:
        return Evidence([], 0, set(), set())


# --- the cases ----------------------------------------------------------------


@dataclass
class Outcome:
    result: Any
    evidence: Evidence
    products: list[Any]
    elapsed: float  # virtual seconds the run took


@dataclass
class Case:
    style: str  # paginate's
    world: Callable[[], World]
    exit: int  # flow run's exit code
    bound: float  # seconds of (virtual) wall time, derived from the fetch settings
    complete: bool  # nothing may be lost: every id held comes out
    preset: str | None = None  # a mock's style: parse's schema and normalize's preset
    bare: bool = False  # pages are bare lists whatever the style
    paginate: str = ""  # more paginate parameters
    stalls: list[tuple[float, float]] = field(default_factory=list)  # (after, for): the loop blocks
    check: Callable[[Outcome], None] | None = None  # the case's own evidence


def graph(case: Case, url: str) -> str:
    extra = case.paginate
    if case.preset:
        parse, normalize = f"{{parse: {{schema: {case.preset}}}}}", f"{{normalize: {{preset: {case.preset}}}}}"  # fmt: skip
    else:
        items = None if case.bare else ITEMS.get(case.style)
        parse = f"{{parse: {{items: {items}}}}}" if items else "parse"
        extra += ", items: data" if case.style == "page" and items else ""
        normalize = "{normalize: {map: {id: id, title: title, price: price, category: category}}}"
    paginate = f"{{paginate: {{url: '{url}', style: {case.style}{extra}}}}}"
    stages = [paginate, f"{{rate_limit: {{rate: {RATE}/s}}}}", FETCH, parse, normalize, "dedupe", "testing_sink"]  # fmt: skip
    return "version: 1\nrun: {deadline: 10m}\nnodes:\n  shop: {pipe: [" + ", ".join(stages) + "]}\n"


def run(case: Case, tmp_path: Any) -> Outcome:
    """Run the case's graph in-process on virtual time against its servers."""
    sinks: dict[str, list[Any]] = {}
    registry = default_registry(plugins=False)
    kinds = Registry([registry[name] for name in registry.names()] + list_kinds({}, sinks))

    async def main() -> tuple[Any, Evidence, float]:
        world = case.world()
        try:
            spec = parse_spec(graph(case, await world.start()), kinds, env={})
            assert [p for p in check(spec) if not p.warning] == []
            loop = asyncio.get_running_loop()
            stalls = asyncio.create_task(stall(case.stalls))
            started = loop.time()
            result = await Runtime(spec, out_dir=tmp_path).run()
            elapsed = loop.time() - started
            stalls.cancel()
            return result, world.evidence(), elapsed
        finally:
            await world.close()

    result, evidence, elapsed = run_virtual(main(), start=100.0)
    products = [p for batch in sinks.get("shop", []) for p in batch.products]
    return Outcome(result, evidence, products, elapsed)


async def stall(stalls: list[tuple[float, float]]) -> None:
    """Block the event loop: after each wait, jump the clock without yielding
    (a blocking call, a long GC pause): every timer due meanwhile fires late."""
    loop = asyncio.get_running_loop()
    for after, length in stalls:
        await asyncio.sleep(after)
        loop.advance(length)


def judge(case: Case, out: Outcome) -> None:
    """The checks every case passes (see the module's doc)."""
    result, evidence = out.result, out.evidence
    ids = Counter(p.source_id for p in out.products)
    assert [i for i, n in ids.items() if n > 1] == []  # no id output twice
    assert set(ids) == evidence.served  # every id served in a good page is out, and only those
    if case.complete:
        assert set(ids) == evidence.held
    pages, records = result.ledger["shop"]["pages"], result.ledger["shop"]["records"]
    assert pages["planned"] == pages["fetched"] + pages["failed"] + pages["abandoned"]
    assert pages["fetched"] == evidence.answered
    settled = records["dead_letters"] + records["duplicates"] + records["filtered"]
    assert records["received"] == settled + records["written"]["shop"]
    assert (pages["unaccounted"], records["unaccounted"]) == (0, {"shop": 0})
    assert records["dead_letters"] == evidence.defects
    assert records["written"]["shop"] == len(out.products)
    assert result.exit_code() == case.exit, result.lost
    assert windows_over_limit(evidence.times, RATE) == []
    assert out.elapsed <= case.bound, f"{out.elapsed:.1f}s > {case.bound:.1f}s"
    # A loss is told in a few error records: one per page that failed for good
    # (fetch) or did not decode (parse), and at most one summary of the walk.
    stages = Counter(e["stage"] for e in result.errors)
    assert stages["paginate"] <= 1 and stages["fetch"] == pages["failed"]
    assert len(result.errors) <= FAILING + 1
    if case.exit == 0:
        assert result.errors == [] and result.lost == []
    if case.check is not None:
        case.check(out)


def retries_waited(out: Outcome) -> None:
    """Each retry reached the server at least Retry-After (2 s) after its 503;
    each page was asked for twice."""
    last: dict[str, tuple[float, int]] = {}
    for t, _, query, _, status in out.evidence.log:
        page = query["_page"]
        if page in last and last[page][1] == 503:
            assert t - last[page][0] >= 2.0
        last[page] = (t, status)
    assert asked(out) == dict.fromkeys(last, 2)


def asked(out: Outcome) -> Counter[str]:
    """How often each page (`_page`) was asked for."""
    return Counter(query["_page"] for _, _, query, _, _ in out.evidence.log)


def html_retried(out: Outcome) -> None:
    assert asked(out) == {"1": 1, "2": 2, "3": 1, "4": 1, "5": 1}


def keys_stay_home(out: Outcome) -> None:
    """The API key went to home with every request, never to the other origin."""
    home, other = out.evidence.log
    assert all(headers.get("x-api-key") == "k3y" for *_, headers, _ in home)
    assert all("x-api-key" not in {k.lower() for k in headers} for *_, headers, _ in other)
    assert [status for *_, status in home] == [307] * len(home) and len(other) == len(home)


def five_hops(out: Outcome) -> None:
    assert len(out.evidence.log) == 1 + 5  # the attempt and 5 hops: not retried, not followed further
    assert [e["error"] for e in out.result.errors] == ["too_many_redirects", "pagination_stopped"]


def errors(*expected: str) -> Callable[[Outcome], None]:
    def check(out: Outcome) -> None:
        assert [e["error"] for e in out.result.errors] == list(expected)

    return check


def capped(out: Outcome) -> None:
    events = out.result.events
    assert [(e["asked"], e["served"]) for e in events if e["event"] == "page_size_capped"] == [(150, 100)]


def stalled(out: Outcome) -> None:
    unstalled = (math.ceil(30 / RATE) - 1) * SPAN  # 30 sends: 5 at once, then 5 every SPAN
    assert out.elapsed > unstalled + 0.5  # the stalls fell inside the run and held it up


def walk_stopped(out: Outcome, total: int | None = None) -> None:
    """A dead endpoint: one summary of the walk, a request count within the
    breaker's schedule, and with a total known, the pages never asked for
    counted as not attempted."""
    result = out.result
    assert [e["error"] for e in result.errors if e["stage"] == "paginate"] == ["pagination_stopped"]
    assert len(out.evidence.times) <= out.evidence.answered + DEAD_REQUESTS
    if total is not None:
        pages = result.ledger["shop"]["pages"]
        assert pages["planned"] + pages["not_attempted"] == total and pages["not_attempted"] > 0


def stop_counted(out: Outcome) -> None:
    walk_stopped(out, total=1000 // 20)


def key(preset: str) -> str:
    return ", headers: {x-api-key: reqres-free-v1}" if preset == "reqres" else ""


_rng = random.Random(7)
STALLS = [(round(_rng.uniform(0.2, 1.5), 3), round(_rng.uniform(0.3, 1.0), 3)) for _ in range(8)]
STALLED = sum(length for _, length in STALLS)
TOTALS = ("page", "skip_limit", "link")  # the styles that learn a total from page 0

CASES = [
    # Dead from the first request: every request 503 (an outage over the whole run). Only
    # page 0 is planned where a total is expected; offset walks on until GIVE_UP in a row.
    *(pytest.param(Case(style, partial(Mock, preset, outages=["0s..10m"]), 1, dead(),
                        False, preset=preset, paginate=key(preset), check=walk_stopped),
                   id=f"dead-from-the-start-{style}") for preset, (_, style, _) in MOCKS.items()),
    # Dies after page 0 (a total of 1,000 = 50 pages where the style has one): however many
    # pages are planned or in flight by then, the walk ends on the breaker's schedule.
    *(pytest.param(Case(style, partial(Scripted, style, 1000 if style in TOTALS else 200, script=unavailable), 1,
                        dead(good=1), False,
                        check=stop_counted if style in TOTALS else walk_stopped),
                   id=f"dies-after-page-0-{style}") for style in loopback.QUERY),
    pytest.param(Case("offset", Refused, 1, dead(), False, check=walk_stopped), id="connection-refused"),
    # 430 records, asked for 150 a page, served 100 with the total: 5 pages at the cap.
    pytest.param(Case("skip_limit", lambda: Mock("dummyjson", products=430, max_page_size=100), 0, healthy(1 + 5), True,
                      preset="dummyjson", paginate=", page_size: 150", check=capped), id="capped-page-size"),
    # 45 records in bare lists, no total: pages to the short third, PREFETCH past it at most.
    pytest.param(Case("page", lambda: Scripted("page", 45, total=None), 0, healthy(3 + PREFETCH), True, bare=True),
                 id="page-style-bare-lists"),
    # The same 45 records on every page: the second page shows it; those in flight come back.
    pytest.param(Case("offset", lambda: Scripted("offset", 45, same=True), 1, healthy(1 + PREFETCH), True,
                      check=errors("paging_ignored")), id="ignores-paging"),
    pytest.param(Case("link", lambda: Scripted("link", 45, script=redirect_loop), 1, healthy(6), False, check=five_hops),
                 id="redirect-loop"),
    # 10 pages, each a hop home and an answer away: 20 sends.
    pytest.param(Case("link", lambda: Away(200), 0, healthy(20), True, paginate=", headers: {x-api-key: k3y}",
                      check=keys_stay_home), id="cross-origin-redirect"),
    # 600 records = 30 pages, and the loop blocked 8 times, each stall adding its length.
    pytest.param(Case("skip_limit", lambda: Mock("dummyjson", products=600), 0, healthy(30, STALLED), True,
                      preset="dummyjson", stalls=STALLS, check=stalled), id="event-loop-stalls"),
    # 60 records, page 2 with a record 10,000 deep: its page is one error; 1 and 3 come out.
    pytest.param(Case("link", lambda: Scripted("link", 60, deep="2"), 1, healthy(3), False, check=errors("json_too_deep")),
                 id="json-10000-deep"),
    pytest.param(Case("link", lambda: Scripted("link", 45, total="lots"), 0, healthy(3 + PREFETCH), True),
                 id="total-header-not-a-number"),
    # 100 records = 5 pages, each 503 + Retry-After: 2 once: page 0 waits 2 s, then pages 1-4
    # (CONCURRENCY at once) 2 s; the breaker opened by those 503s lets a probe through after COOLDOWN.
    pytest.param(Case("link", lambda: Scripted("link", 100, script=retry_after_once), 0,
                      healthy(10, 2 * (1 + math.ceil(4 / CONCURRENCY)) + COOLDOWN), True, check=retries_waited),
                 id="503-retry-after"),
    # 5 pages and one retry, after one backoff (at most BACKOFF before the first retry).
    pytest.param(Case("link", lambda: Scripted("link", 100, script=html_once), 0, healthy(6, BACKOFF), True,
                      check=html_retried),
                 id="html-with-200-once"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_fault_matrix(case: Case, tmp_path: Any) -> None:
    judge(case, run(case, tmp_path))
