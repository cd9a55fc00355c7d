"""`flow plan`: each source's pages, requests and time, predicted before a run.

`collect` walks each source node's pipe, then those of the nodes downstream
of it, calling every stage kind's `plan` hook (flow.registry) with the
source's `SourcePlan`: paginate tells the pages (from one first request, or
what the graph's `mocks:` declares), rate_limit the send budget, fetch the
concurrency, timeout and retries. The hooks' synchronous parts run in pipe
order; what they return to await (paginate's first request) runs after, so
it sees the fetch's timeout and retries. A failed one raises `PlanFailed`.

The time model (`simulate`): the walks as flow runs them, on one simulated
clock, every source at once (they run in parallel, may share a limiter):

    page, skip_limit, link  page 0 alone; its answer holds the total; then
                            every page at once
    offset                  page 0 alone; then `prefetch` pages in flight
                            until a short or empty page ends the walk (pages
                            planned past it come back empty: overshoot)
    cursor                  strictly sequential: each answer names the next
    style: auto             the probes first, one after the other

A page holds one of the fetch's `concurrency` slots from its first attempt
to its outcome (backoffs included); each attempt takes a send slot of a
fresh copy of the rate_limit stage's own limiter (no `window + margin`
holds more than `rate` sends, retries included), then its latency. Roughly,
for N pages of latency L:

    total styles  L + max(floor((N - 1) / rate) x (window + margin),  rate
                          ceil((N - 1) / concurrency) x L)             concurrency
    cursor        N x L, or the rate bound if that is longer

A failed attempt costs its latency (a hang: the fetch's `timeout`), a
backoff drawn as the fetch draws it (full jitter), and another slot; a 429
from the server's own limit, its Retry-After. Latencies, faults and limits
are the server's: a mock the graph declares gives its seeded draws (the
n-th attempt at a page meets the same latency and fault in the run: they
are replayed); otherwise every request takes the first request's measured
latency and none fails. With retries, the time is the mean of SAMPLES walks
with the backoffs drawn (fewer for big walks; their range is given);
counts come from one walk at the mean backoffs. The binding limit is the one whose removal shortens
the fault-free walk most (simulated without it), else a `sequential cursor
walk` or `latency`. The run takes the slowest source's time.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import itertools
import math
import random
import statistics
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from .graph import edges
from .problems import Problem
from .topology import downstream, main_readers, topological

__all__ = ["Answer", "Declared", "PlanFailed", "RateBudget", "SourcePlan", "collect", "predict", "simulate"]


class Answer(NamedTuple):
    """One attempt as the server will answer it."""

    seconds: float  # from the send to the answer (a hang: until it ends)
    fault: str | None  # None: a good page; "error", "hang", "reset" or "bad_body"


class Declared(NamedTuple):
    """What the graph declares of a server (its `mocks:` entry)."""

    name: str
    records: int
    page_cap: int  # the largest page it serves
    latency: tuple[float, float]  # low, high (seconds)
    rate: tuple[int, float] | None  # its own limit (count, window), None: none
    style: str | None  # the paging style it speaks, for `style: auto` offline
    # A fresh sequence of its seeded draws: (url, query) -> the next attempt's
    # Answer. Fresh per simulation: the server counts attempts per page.
    answers: Callable[[], Callable[[str, Mapping[str, str]], Answer]] | None = None
    gate: Callable[[], Gate] | None = None  # a fresh copy of its own rate limit


class Limiter(Protocol):  # the rate_limit stage's (stages.http.limiter)
    def reserve(self, now: float) -> float: ...  # the earliest send time at or after `now`, taken
    def hold_until(self, when: float) -> None: ...  # no send before `when` (a Retry-After)


class Gate(Protocol):  # a server's own rate limit (mocks/_ratelimit.py)
    def admit(self, now: float) -> bool: ...  # an arrival at `now`; False: answered 429
    def retry_after(self, now: float) -> float: ...  # seconds until one would be admitted


class RateBudget(NamedTuple):
    """A rate_limit's budget; sources naming the same limiter share it."""

    name: str
    count: int
    window: float
    margin: float
    make: Callable[[], Limiter]  # a fresh limiter with the stage's own semantics

    def __str__(self) -> str:
        return f"{self.count}/s" if self.window == 1 else f"{self.count}/{self.window:g}s"


class PlanFailed(Exception):
    """A first request failed; the message says which and why."""


@dataclass
class SourcePlan:
    """What the stage kinds tell of one source's walk (see the module docstring)."""

    node: str
    offline: bool
    declared_at: Callable[[str], Declared | None] = lambda url: None  # the mock a URL points at
    stage_node: str = ""  # the node of the stage whose hook is being called
    # paginate
    url: str = ""
    style: str | None = None
    detected: str | None = None  # style: auto: what the probes (or the mock) showed
    page_size: int | None = None  # as the server serves it
    records: int | None = None
    pages: int | None = None  # pages to the walk's end (an open walk's short or empty page included)
    pages_from: str = "unknown"
    max_pages: int | None = None  # the walk's own limit
    walk: str = "total"  # total, open (offset: no total) or cursor
    prefetch: int = 1
    probes: list[dict[str, str]] = field(default_factory=list)  # style: auto's probe queries
    query: Callable[[int], dict[str, str] | None] = lambda page: None  # page -> its query (None: not known)
    latency: float | None = None  # the first request's, measured
    planning_requests: int = 0
    declared: Declared | None = None
    # rate_limit
    rate: RateBudget | None = None
    # fetch
    concurrency: int = 1
    timeout: float = math.inf
    attempts: int = 1
    backoff: tuple[float, float] = (0.5, 8.0)  # base, ceiling
    bad_body_fails: bool = True  # a 2xx body that is not JSON is retried
    retry_after_cap: float = 60.0  # the longest Retry-After honoured
    notes: list[str] = field(default_factory=list)
    failure: str | None = None  # located, set by `collect`

    def typical_latency(self) -> float | None:
        if self.declared is not None:
            return sum(self.declared.latency) / 2
        return self.latency

    def backoff_after(self, attempt: int, jitter: random.Random | None = None) -> float:
        """The wait after failed attempt `attempt` (1-based), full jitter's
        draw as stages.http.retry draws it, or its mean."""
        base, ceiling = self.backoff
        top = min(ceiling, base * 2 ** (attempt - 1))
        return jitter.uniform(0.0, top) if jitter is not None else top / 2


async def collect(
    spec: Any, *, offline: bool, declared_at: Callable[[str], Declared | None]
) -> list[SourcePlan]:
    """Every source's SourcePlan, its hooks called and awaited (the sources'
    first requests at once); a failed one has `failure`, located."""
    wiring = edges(spec)
    readers = main_readers(spec.nodes, wiring)
    order = topological({name: [e.source for e in wiring[name]] for name in spec.nodes})
    plans, waits = [], []
    for name, node in spec.nodes.items():
        if not node.stages[0].kind.is_source or node.stages[0].kind.serves:  # a service intake walks no pages
            continue
        plan = SourcePlan(name, offline, declared_at)
        reached = downstream(readers, {name})
        pending = []
        for walked in (n for n in order if n in reached):
            for stage in spec.nodes[walked].stages:
                if stage.kind.plan is not None:
                    plan.stage_node = walked
                    outcome = stage.kind.plan(stage.params, plan)
                    if inspect.isawaitable(outcome):
                        pending.append((stage, outcome))
        plans.append(plan)
        waits.append(_settle(spec, plan, pending))
    await asyncio.gather(*waits)
    return plans


async def _settle(spec: Any, plan: SourcePlan, pending: list[tuple[Any, Any]]) -> None:
    for stage, outcome in pending:
        try:
            await outcome
        except PlanFailed as failed:
            plan.failure = spec.where(Problem(stage.path, f"source '{plan.node}': {failed}"))
            for _, rest in pending:
                if inspect.iscoroutine(rest):
                    rest.close()  # never awaited: closed, not warned about
            return


@dataclass
class Walked:
    """One source's walk on the simulated clock."""

    seconds: float = 0.0  # from the run's start to its last answer
    requests: int = 0
    retries: int = 0
    throttled: int = 0  # answered 429 by the server's own limit
    overshoot: int = 0
    failed: int = 0  # pages failed for good
    sends: list[float] = field(default_factory=list)
    busy: float = 0.0  # seconds of requests in flight, summed


class _Clock:
    """Events in time order (ties: first scheduled, first run)."""

    def __init__(self) -> None:
        self._events: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._order = itertools.count()

    def at(self, when: float, call: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._events, (when, next(self._order), call, args))

    def run(self) -> None:
        while self._events:
            when, _, call, args = heapq.heappop(self._events)
            call(when, *args)


class _Walk:
    """One source as flow walks it (the module docstring). Requests are
    page numbers; probes are -1, -2, ... in the order they are sent."""

    def __init__(self, plan: SourcePlan, clock: _Clock, limiter: Limiter | None, server: tuple[Any, Any], *,
                 faults: bool, concurrency: float, jitter: random.Random | None) -> None:  # fmt: skip
        self.plan, self.clock, self.limiter = plan, clock, limiter
        self.draw, self.gate = server  # the server's draws and its own limit (None: not declared)
        self.faults, self.concurrency, self.jitter = faults, concurrency, jitter
        self.queue: deque[int] = deque()  # waiting for a fetch slot
        self.in_flight = 0  # holding a slot, backoffs included
        self.planned = self.answered = 0
        self.ended = False  # an open walk saw its short or empty page
        self.limit = plan.max_pages or math.inf
        self.out = Walked()

    def start(self) -> None:
        self.clock.at(0.0, self._plan, -1 if self.plan.probes else 0)

    def _plan(self, now: float, request: int) -> None:
        if request >= 0:
            self.planned = max(self.planned, request + 1)
        self.queue.append(request)
        self._take(now)

    def _take(self, now: float) -> None:
        while self.queue and self.in_flight < self.concurrency:
            self.in_flight += 1
            self._attempt(now, self.queue.popleft(), 1)

    def _attempt(self, now: float, request: int, attempt: int) -> None:
        sent = self.limiter.reserve(now) if self.limiter is not None else now
        self.clock.at(sent, self._send, request, attempt)

    def _send(self, now: float, request: int, attempt: int) -> None:
        """On the wire at `now`: the server's answer, in send order (the
        server counts arrivals for its limit, attempts per page for its draws)."""
        plan, gate = self.plan, self.gate
        self.out.requests += 1
        self.out.sends.append(now)
        if gate is not None and not gate.admit(now):  # a 429, at once, with a Retry-After
            self.out.throttled += 1
            after = min(float(math.ceil(gate.retry_after(now) - 1e-9) or 1), plan.retry_after_cap)
            self.clock.at(now, self._answered, request, attempt, True, after)
            return
        query = plan.probes[-1 - request] if request < 0 else plan.query(request)
        answer = self.draw(plan.url, query) if self.draw is not None and query is not None else None
        if answer is None or (not self.faults and answer.fault is not None):
            answer = Answer(plan.typical_latency() or 0.0, None)
        failed = answer.fault is not None and (answer.fault != "bad_body" or plan.bad_body_fails)
        seconds = min(answer.seconds, plan.timeout)  # a hang: the timeout
        self.out.busy += seconds
        self.clock.at(now + seconds, self._answered, request, attempt, failed or seconds >= plan.timeout, 0.0)

    def _answered(self, now: float, request: int, attempt: int, failed: bool, after: float) -> None:
        if failed and attempt < self.plan.attempts:
            self.out.retries += 1
            if after and self.limiter is not None:  # a 429: every sender of the limiter holds off
                self.limiter.hold_until(now + after)
            wait = max(self.plan.backoff_after(attempt, self.jitter), after)
            self.clock.at(now + wait, self._attempt, request, attempt + 1)
            return
        self.in_flight -= 1
        self.out.seconds = max(self.out.seconds, now)
        self.out.failed += failed and request >= 0
        if request < 0:
            if not failed:  # the next probe, or page 0 of the style found
                self._plan(now, request - 1 if -request < len(self.plan.probes) else 0)
        else:
            self._walked(now, request, failed)
        self._take(now)  # a slot came free: the next request waiting takes it

    def _walked(self, now: float, page: int, failed: bool) -> None:
        plan, last = self.plan, (self.plan.pages or 1) - 1
        self.answered += 1
        if plan.walk == "cursor":
            if not failed and page < last and page + 1 < self.limit:
                self._plan(now, page + 1)
        elif plan.walk == "total":
            if page == 0 and not failed:
                for later in range(1, int(min(last + 1, self.limit))):
                    self._plan(now, later)
        else:
            if page >= last and not failed:
                self.ended = True
                self.out.overshoot = max(0, self.planned - last - 1)
            if page == 0 and failed and plan.style != "offset":
                return
            while (
                not self.ended and self.planned < self.limit and self.planned - self.answered < plan.prefetch
            ):
                self._plan(now, self.planned)


def simulate(plans: list[SourcePlan], *, faults: bool = True, free: str = "",
             jitter: random.Random | None = None) -> dict[str, Walked]:  # fmt: skip
    """Every source whose pages and latency are known, walked at once on one
    simulated clock; `free`: walk without that limit ("rate", "concurrency");
    `faults=False`: every attempt succeeds; `jitter`: draw the backoffs
    (else their mean)."""
    clock = _Clock()
    limiters: dict[str, Limiter] = {}  # by name: shared limiters are one budget
    servers: dict[str, tuple[Any, Any]] = {}  # its draws and limit, shared by the sources calling it
    walks = {}
    for plan in plans:
        if plan.failure is not None or plan.pages is None or plan.typical_latency() is None:
            continue  # too little is known to walk it
        limiter = None
        if plan.rate is not None and free != "rate":
            limiter = limiters.get(plan.rate.name) or limiters.setdefault(plan.rate.name, plan.rate.make())
        declared, server = plan.declared, (None, None)
        if declared is not None:
            if declared.name not in servers:
                draw = declared.answers() if declared.answers is not None else None
                gate = declared.gate() if declared.gate is not None and faults else None  # 429s are faults
                servers[declared.name] = (draw, gate)
            server = servers[declared.name]
        concurrency = math.inf if free == "concurrency" else plan.concurrency
        walk = _Walk(plan, clock, limiter, server, faults=faults, concurrency=concurrency, jitter=jitter)
        walks[plan.node] = walk
        walk.start()
    clock.run()
    return {name: walk.out for name, walk in walks.items()}


@dataclass
class Predicted:
    """One source's prediction (`walked` None: too little is known to walk it)."""

    plan: SourcePlan
    walked: Walked | None = None  # at the mean backoffs: the counts
    seconds: float | None = None  # the mean over the backoffs' draws
    spread: tuple[float, float] | None = None  # the fastest and slowest of those draws
    fault_free: float | None = None  # its walk's seconds if no attempt failed
    bounds: dict[str, float] = field(default_factory=dict)  # seconds under only that limit
    binding: str | None = None


SAMPLES = 40  # walks with the backoffs drawn, when there are retries ...
SAMPLED = 200_000  # ... fewer when they would send more requests than this in all (at least 3)


def predict(plans: list[SourcePlan]) -> dict[str, Predicted]:
    """Every source's walk, its time and its binding limit."""
    full = simulate(plans)
    requests = sum(walked.requests for walked in full.values())
    samples = min(SAMPLES, max(3, SAMPLED // max(1, requests)))
    retried = any(walked.retries for walked in full.values())
    drawn = [simulate(plans, jitter=random.Random(seed)) for seed in range(samples if retried else 0)]
    base, no_rate, no_conc = (
        simulate(plans, faults=False, free=free) for free in ("", "rate", "concurrency")
    )
    out = {}
    for plan in plans:
        walked = full.get(plan.node)
        out[plan.node] = predicted = Predicted(plan, walked)
        if walked is None:
            continue
        times = [run[plan.node].seconds for run in drawn] or [walked.seconds]
        predicted.seconds, predicted.spread = statistics.fmean(times), (min(times), max(times))
        took, rate_only, concurrency_only = (run[plan.node].seconds for run in (base, no_conc, no_rate))
        predicted.fault_free = took
        predicted.bounds = {"rate": rate_only, "concurrency": concurrency_only}
        predicted.binding = _binding(plan, took - concurrency_only, took - rate_only, took, plans, walked)
    return out


def _binding(plan: SourcePlan, by_rate: float, by_concurrency: float, took: float,
             plans: list[SourcePlan], walked: Walked) -> str:  # fmt: skip
    """The limit whose removal shortens the fault-free walk most (by_*: how
    much); the server's own, if it answered 429."""
    if walked.throttled and plan.declared is not None and plan.declared.rate is not None:
        count, window = plan.declared.rate
        return f"the server's own limit {count}/{window:g}s ({walked.throttled} answered 429)"
    if max(by_rate, by_concurrency) <= 0.02 * took:
        return "sequential cursor walk" if plan.walk == "cursor" else "latency"
    if by_rate >= by_concurrency and plan.rate is not None:
        shared = [p.node for p in plans if p.rate is not None and p.rate.name == plan.rate.name]
        if len(shared) > 1:
            return f"shared limiter {plan.rate.name} ({plan.rate} across {', '.join(shared)})"
        return f"rate limit {plan.rate}"
    latency = 1000 * (plan.typical_latency() or 0)
    return f"concurrency {plan.concurrency} \N{MULTIPLICATION SIGN} {latency:.0f} ms latency"
