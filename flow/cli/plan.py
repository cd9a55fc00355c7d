"""`flow plan GRAPH [--offline] [--format text|json]`: each source's pages,
requests and time, predicted before running (the model: flow.plan).

One first request per source (with `style: auto`, its probes), none with
`--offline`; nothing else is fetched. The graph's mocks are started as
`flow run` starts them, and what their `mocks:` entries declare (records,
page cap, latency range, seeded faults, rate limit) is the plan's figures
for the sources that point at them ("declared by the mock"): that is how
`--offline` predicts a mocked graph. Exit codes: 0 the plan is made (a
deadline it cannot meet is a warning, on stderr and in the json); 1 a
first request failed (located); 2 an invalid graph.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

from ._load import add_graph_arguments, load_checked
from ._output import Abort, error, out, warning

# The paging style each mock style speaks (mocks/styles), for `style: auto` offline.
PAGING = {"dummyjson": "skip_limit", "platzi": "offset", "reqres": "page", "jsonserver": "link",
          "cursor": "cursor"}  # fmt: skip
BAD_BODIES = {"truncate", "invalid_json", "html"}  # a 200 whose body is not the JSON page
_MOCK_URL = re.compile(r"^\$\{mocks\.([A-Za-z_][A-Za-z0-9_-]*)\.url\}")
_PLAIN = re.compile(r"[A-Za-z0-9_.~-]*")  # what urlencode leaves as it is


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_graph_arguments(parser)
    parser.add_argument(
        "--offline",
        action="store_true",
        help="make no request at all: pages and latency from the graph's mocks: block (and max_pages)",
    )
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="json: one object, per-source fields"
    )
    parser.add_argument(
        "--shards", type=int, metavar="N",
        help="also place the sources over N shards, weighted by their predicted time (flow.placement)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    spec = load_checked(args)
    plans, start_up, spec = asyncio.run(_collect(args, spec, started))
    from .._interpolate import scrub
    from ..plan import predict

    report = _report(spec, plans, predict(plans), start_up, args.offline)
    placement = _placement(spec, report, args.shards) if args.shards else None
    if placement is not None:
        report["placement"] = placement.to_json()
    if args.format == "json":
        out(scrub(json.dumps(report, indent=2, ensure_ascii=False), spec.secrets))
    else:
        out(scrub(_text(report), spec.secrets))
        if placement is not None:
            out(f"placement over {args.shards} shards (weighted by predicted time):")
            out("\n".join(f"  {line}" for line in placement.describe()))
    for text in report["warnings"]:
        warning(f"flow: warning: {scrub(text, spec.secrets)}")
    for failure in report["failures"]:
        error(scrub(failure, spec.secrets))
    return 1 if report["failures"] else 0


def _placement(spec: Any, report: dict[str, Any], shards: int) -> Any:
    from ..placement import place

    if shards < 1:
        raise Abort(f"--shards {shards}: a cluster has at least one shard")
    weights = {name: float(source.get("seconds") or 1.0) for name, source in report["sources"].items()}
    return place(spec, shards, weights)


async def _collect(args: argparse.Namespace, spec: Any, started: float) -> tuple[list[Any], float, Any]:
    """The sources' plans, the start-up measured (loading, mocks started)
    and the spec (its mock URLs filled in once they run)."""
    from ..plan import collect

    if not spec.mocks or args.offline:
        declared_at = _declared(spec.mocks, {})
        start_up = time.perf_counter() - started
        return await collect(spec, offline=args.offline, declared_at=declared_at), start_up, spec
    from mocks import serve

    async with serve(spec.mocks) as servers:
        spec = load_checked(args, refs={name: server.url for name, server in servers.items()})
        start_up = time.perf_counter() - started
        plans = await collect(spec, offline=False, declared_at=_declared(spec.mocks, servers))
    return plans, start_up, spec


def _declared(mocks: dict[str, Any], servers: dict[str, Any]) -> Callable[[str], Any]:
    """The mock a source's URL points at (`${mocks.NAME.url}...`, or a
    running mock's URL), as a flow.plan.Declared; None for other URLs."""
    from mocks import VENDOR_STYLES

    # Vendors serve jobs, not pages: no source walks them, so none is declared.
    declared = {name: _declare(name, spec) for name, spec in mocks.items() if spec.style not in VENDOR_STYLES}

    def declared_at(url: str) -> Any:
        named = _MOCK_URL.match(url)
        if named is not None:
            return declared.get(named[1])
        for name, server in servers.items():
            if server.url and (url == server.url or url.startswith(server.url + "/")):
                return declared.get(name)
        return None

    return declared_at


def _declare(name: str, spec: Any) -> Any:
    """What a mock's entry declares; its seeded draws are the server's own
    (mocks/_faults.py): the n-th attempt at a page meets the same latency
    and fault in the run as here."""
    from mocks import MockServer

    from ..plan import Answer, Declared

    faults = MockServer(spec, name=name).faults  # not started: its fault plan only

    def answers() -> Callable[[str, Any], Answer]:
        faults.reset()  # a fresh server: no attempt counted yet

        def draw(url: str, query: Any) -> Answer:
            path, fixed = _split(url)
            pairs = "".join(itertools.chain.from_iterable(query.items()))
            encoded = "&".join(map("=".join, query.items())) if _PLAIN.fullmatch(pairs) else urlencode(query)
            decision = faults.decide(path, f"{fixed}&{encoded}" if fixed else encoded)
            fault = "bad_body" if decision.fault in BAD_BODIES else decision.fault
            return Answer(decision.latency, fault)

        return draw

    def gate() -> Any:
        from mocks import SlidingWindowLimit

        return SlidingWindowLimit(*timing.rate)

    timing, paging = spec.timing, PAGING.get(spec.style)
    return Declared(name, spec.products, spec.max_page_size, timing.latency, timing.rate, paging, answers,
                    gate if timing.rate else None)  # fmt: skip


@functools.lru_cache(maxsize=64)
def _split(url: str) -> tuple[str, str]:
    """A source URL's path and fixed query, as its mock sees them."""
    parts = urlsplit(_MOCK_URL.sub("http://mock", url))
    return parts.path or "/", parts.query


def _report(spec: Any, plans: list[Any], predicted: dict[str, Any], start_up: float,
            offline: bool) -> dict[str, Any]:  # fmt: skip
    walks = {name: p.walked for name, p in predicted.items() if p.walked is not None}
    sources = {name: _source(p, plans, walks) for name, p in predicted.items()}
    known = {name: s["seconds"] for name, s in sources.items() if s["seconds"] is not None}
    slowest = max(known, key=lambda name: known[name]) if known else None
    run = known[slowest] if slowest is not None else None
    deadline = float(spec.run.deadline)
    warnings = []
    if run is not None and run > deadline:
        late = "; ".join(f"{n} ~{s:.1f} s, {sources[n]['binding']}" for n, s in known.items() if s > deadline)
        warnings.append(
            f"the run needs ~{run:.1f} s but run.deadline is {deadline:g} s ({late}): it would stop at its "
            "deadline with pages not fetched; raise run.deadline or the limits"
        )
    total = None if run is None else round(run + start_up, 3)
    seconds = {"run": run, "start_up": round(start_up, 3), "total": total, "slowest": slowest}
    return {
        "file": spec.file,
        "offline": offline,
        "requests_made": sum(p.planning_requests for p in plans),
        "sources": sources,
        "seconds": seconds | {"unknown": sorted(set(sources) - set(known))},
        "deadline": {"seconds": deadline, "met": None if run is None else run <= deadline},
        "warnings": warnings,
        "failures": [p.failure for p in plans if p.failure],
    }


def _source(predicted: Any, plans: list[Any], walks: dict[str, Any]) -> dict[str, Any]:
    plan, walked = predicted.plan, predicted.walked
    declared = plan.declared
    measured = "measured" if plan.latency is not None else None
    requests: dict[str, Any] = {"planning": plan.planning_requests, "probes": len(plan.probes)}
    if walked is not None:
        requests |= {"run": walked.requests, "retries": walked.retries, "throttled": walked.throttled,
                     "overshoot": walked.overshoot, "pages_failed": walked.failed}  # fmt: skip
    typical = _round(plan.typical_latency())
    latency_from = f"declared by the mock {declared.name}" if declared is not None else measured
    return {
        "url": plan.url,
        "style": plan.style,
        "detected": plan.detected,
        "page_size": plan.page_size,
        "records": plan.records,
        "pages": plan.pages,
        "pages_from": plan.pages_from,
        "requests": requests,
        "latency": {"first": _round(plan.latency), "typical": typical, "from": latency_from},
        "seconds": _round(predicted.seconds),
        "range": [_round(t) for t in predicted.spread] if predicted.spread else None,
        "fault_free_seconds": _round(predicted.fault_free),
        "bounds": {name: _round(seconds) for name, seconds in predicted.bounds.items()},
        "binding": predicted.binding,
        "limits": _limits(plan, walked, plans, walks) if walked is not None else [],
        "notes": plan.notes,
        "failure": plan.failure,
    }


def _limits(plan: Any, walked: Any, plans: list[Any], walks: dict[str, Any]) -> list[dict[str, Any]]:
    """The source's simulated requests per second against each limit on it;
    a limit's busiest window counts every source under it."""
    took = walked.seconds or 1e-9
    per_second = round(walked.requests / took, 2)

    def window_of(count: int, window: float, under: list[str]) -> dict[str, Any]:
        sends = [t for name in under if name in walks for t in walks[name].sends]
        busiest = _busiest(sends, window)
        return {"allowed": count, "window": window, "per_second": per_second, "busiest_window": busiest,
                "sources": under}  # fmt: skip

    limits = []
    if plan.rate is not None:
        rate = plan.rate
        shared = [p.node for p in plans if p.rate is not None and p.rate.name == rate.name]
        label = f"shared limiter {rate.name} ({rate})" if len(shared) > 1 else f"rate limit {rate}"
        limits.append({"limit": label, "kind": "rate"} | window_of(rate.count, rate.window, shared))
    in_flight = round(walked.busy / took, 2)
    limits.append({"limit": f"concurrency {plan.concurrency}", "kind": "concurrency",
                   "allowed": plan.concurrency, "in_flight": in_flight})  # fmt: skip
    declared = plan.declared
    if declared is not None and declared.rate is not None:
        (count, window), name = declared.rate, declared.name
        same = [p.node for p in plans if p.declared is not None and p.declared.name == name]
        label = f"the server's {count}/{window:g}s (declared by the mock {name})"
        limits.append({"limit": label, "kind": "server"} | window_of(count, window, same))
    return limits


def _busiest(sends: list[float], window: float) -> int:
    """The most sends in any `window` seconds."""
    ordered, most, first = sorted(sends), 0, 0
    for last, at in enumerate(ordered):
        while ordered[first] <= at - window:
            first += 1
        most = max(most, last - first + 1)
    return most


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def _text(report: dict[str, Any]) -> str:
    made = report["requests_made"]
    lines = [f"flow plan {report['file']}: {_count(len(report['sources']), 'source')}; "
             f"{_count(made, 'request')} made to plan, nothing else fetched"]  # fmt: skip
    for name, source in report["sources"].items():
        lines += _source_lines(name, source)
    seconds, deadline = report["seconds"], report["deadline"]
    if seconds["run"] is None:
        lines.append("time: unknown (no source could be walked)")
        return "\n".join(lines)
    unknown = f"; not predicted: {', '.join(seconds['unknown'])}" if seconds["unknown"] else ""
    met = "met" if deadline["met"] else "NOT met"
    lines.append(
        f"time: {seconds['run']:.2f} s ({seconds['slowest']}, the slowest; the sources run in parallel) "
        f"+ start-up {seconds['start_up']:.2f} s = {seconds['total']:.2f} s; run.deadline "
        f"{deadline['seconds']:g} s: {met}{unknown}"
    )
    return "\n".join(lines)


def _source_lines(name: str, s: dict[str, Any]) -> list[str]:
    if s["failure"]:
        return [f"{name}: the first request failed (below)"]
    size = f", page size {s['page_size']}" if s["page_size"] else ""
    lines = [f"{name} ({s['style']}{size})"]
    if s["detected"]:
        lines.append(f"  detected  {s['detected']}")
    pages = f"{s['pages']} ({s['pages_from']})" if s["pages"] is not None else "unknown"
    lines.append(f"  pages     {pages}")
    r = s["requests"]
    if "run" in r:
        extra = [_count(r["probes"], "probe")] * bool(r["probes"])
        extra.append(_count(r["retries"], "retry", "retries"))
        extra += [f"{r['throttled']} answered 429"] * bool(r["throttled"])
        extra += [f"{r['overshoot']} past the end"] * bool(r["overshoot"])
        lines.append(f"  requests  {r['run']} ({', '.join(extra)}); {r['planning']} made to plan")
    latency = s["latency"]
    if latency["typical"] is not None:
        measured = latency["first"] is not None and latency["from"] != "measured"
        first = f"; first request {1000 * latency['first']:.0f} ms" if measured else ""
        lines.append(f"  latency   {1000 * latency['typical']:.0f} ms ({latency['from']}){first}")
    if s["seconds"] is not None:
        low, high = s["range"]
        spread = f" ({low:.2f} to {high:.2f} s by the retries' backoffs)" if high - low > 0.005 else ""
        retries = s["seconds"] - s["fault_free_seconds"]
        cost = f"; retries cost +{retries:.2f} s" if retries > 0.005 else ""
        lines.append(f"  time      {s['seconds']:.2f} s{spread}, bound by {s['binding']}{cost}")
        for i, limit in enumerate(s["limits"]):
            lines.append(("  limits    " if i == 0 else " " * 12) + _limit_text(limit))
    else:
        lines.append("  time      unknown")
    lines += [f"  note      {note}" for note in s["notes"]]
    return lines


def _limit_text(limit: dict[str, Any]) -> str:
    if limit["kind"] == "concurrency":
        return f"{limit['limit']}: {limit['in_flight']:.1f} in flight on average"
    under = limit["sources"]
    shared = f" (with {', '.join(under)})" if len(under) > 1 else ""
    return (f"{limit['limit']}: at most {limit['busiest_window']} in any {limit['window']:g} s{shared}, "
            f"{limit['per_second']:.1f}/s over the walk")  # fmt: skip


def _count(n: int, one: str, many: str = "") -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"
