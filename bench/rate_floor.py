"""How close `flow run` comes to the floor a rate limit sets.

Three mock endpoints of 300 products each (dummyjson, reqres, jsonserver: the
styles whose first page gives the total, so each endpoint is exactly 15
pages of 20; platzi's offset paging would need a 16th, empty page to find
the end), each limited by the server to 5 requests in any sliding 1 s window
(a 6th gets a 429), no latency, no faults, in their own process
(`python -m mocks --config`). The graph is the default chain with
`rate_limit: {rate: 5/s}` per endpoint (graph.yaml's shape): paginate ->
rate_limit -> fetch -> parse -> normalize, merge -> redact -> quality ->
dedupe -> window -> summary_json.

The floor: with at most 5 requests in any 1 s window, request k (from 0) of
an endpoint cannot go out before floor(k / 5) s, so its 15th and last goes
out at floor(14 / 5) = 2 s after its first; the endpoints have separate
limits and run side by side, so no client can finish sooner than 2.0 s (plus
one response, a few ms here). flow's limiter adds a 0.05 s margin per window
for network jitter (rate_limit's `margin`), which puts its own floor at
2.1 s.

Each of `--repeats` runs: wall seconds from spawning `flow run` to its exit
(interpreter start-up, imports, graph load and report writing included),
the paced span at the servers (first to last request arrival at any
endpoint), requests and 429s per server (GET /__stats; the servers are
reset before each run). A run with a 429, a failed page or fewer than 300
records from an endpoint is reported as invalid and the benchmark exits 1.
Printed: median (min..max) of wall, span and wall / floor. Goal: wall <=
1.15 x floor + 0.3 s, with zero 429s.

`--under-load` runs one CPU burner process per core (a busy loop at normal
priority) during the measurement, so flow and the servers compete for CPU.

    python bench/rate_floor.py [--repeats 5] [--under-load]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from throughput import FLOW, default_chain, http_json, run_measured, spread, start_mocks, stop  # shared tools

PRODUCTS, PAGE_SIZE, RATE, WINDOW = 300, 20, 5, 1.0
SHOPS = {"shop_a": "dummyjson", "shop_b": "reqres", "shop_c": "jsonserver"}  # node -> API style
SLACK, ALLOWANCE = 1.15, 0.3  # goal: wall <= SLACK x floor + ALLOWANCE

BURNER = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


def floor_seconds(requests: int, rate: int, window: float) -> float:
    """When the last of `requests` can go out, the first at 0, with at most
    `rate` in any sliding `window`: request k waits for floor(k / rate) windows."""
    return math.floor((requests - 1) / rate) * window


def one_run(graph: Path, out: Path, urls: dict[str, str], timeout: float) -> dict[str, float | int | str]:
    for url in urls.values():
        http_json(f"{url}/__reset", "POST")
    command = [*FLOW, "run", str(graph), "--out", str(out), "--no-progress", "-q"]
    measured = run_measured(command, timeout=timeout)
    requests = too_many = 0
    first, last = math.inf, -math.inf
    for url in urls.values():
        stats = http_json(f"{url}/__stats")
        # The servers log arrivals in seconds since their reset, on
        # time.monotonic(), the clock run_measured notes the spawn on.
        since = time.monotonic() - stats["server"]["uptime"] - measured.spawned
        arrivals = [since + r["t"] for r in stats["requests"]]
        requests += len(arrivals)
        too_many += stats["counts"]["by_status"].get("429", 0)
        first, last = min(first, *arrivals), max(last, *arrivals)
    problems = []
    if measured.code != 0:
        problems.append(f"exit code {measured.code}")
    report = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {"ledger": {}}
    for name in SHOPS:
        ledger = report["ledger"].get(name, {"records": {"received": 0}, "pages": {"failed": 0}})
        if ledger["records"]["received"] != PRODUCTS or ledger["pages"]["failed"]:
            problems.append(
                f"{name}: {ledger['records']['received']} records, {ledger['pages']['failed']} failed"
            )
    if too_many:
        problems.append(f"{too_many} answers 429")
    return {
        "wall": measured.wall,
        "cpu": measured.cpu,
        "run_seconds": report.get("seconds", math.nan),  # the run itself, as run.json times it
        "span": last - first,  # first to last arrival at any of the servers
        "start_up": first,  # spawn to the first arrival: start-up, imports, graph load, first send
        "tail": measured.wall - last,  # the last arrival to exit: last pages through the chain, reports
        "requests": requests,
        "too_many": too_many,
        "invalid": "; ".join(problems),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--under-load", action="store_true", help="a CPU burner process on every core")
    parser.add_argument("--timeout", type=float, default=60, help="seconds one run may take")
    args = parser.parse_args()
    pages = math.ceil(PRODUCTS / PAGE_SIZE)
    floor = floor_seconds(pages, RATE, WINDOW)
    goal = SLACK * floor + ALLOWANCE
    burners: list[subprocess.Popen[bytes]] = []
    runs = []
    with tempfile.TemporaryDirectory(prefix="flow-bench-") as tmp:
        work = Path(tmp)
        mocks = "mocks:\n" + "".join(
            f"  {name}: {{style: {style}, products: {PRODUCTS}, rate_limit: {RATE}/s}}\n"
            for name, style in SHOPS.items()
        )
        (work / "mocks.yaml").write_text(mocks)
        server, urls = start_mocks(["--config", str(work / "mocks.yaml")], count=len(SHOPS))
        try:
            shops = {name: (urls[name], style) for name, style in SHOPS.items()}
            graph = work / "graph.yaml"
            graph.write_text(default_chain(shops, PAGE_SIZE, rate=f"{RATE}/s", deadline="60s"))
            if args.under_load:
                seconds = args.repeats * (args.timeout + 2) + 10  # ends by itself even if not stopped
                code = BURNER.format(seconds=seconds)
                burners = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(os.cpu_count() or 1)]
                time.sleep(0.5)
            for k in range(args.repeats):
                time.sleep(WINDOW + 0.1)  # nothing of the last run left in any server window
                run = one_run(graph, work / "out", urls, args.timeout)
                runs.append(run)
                print(
                    f"run {k + 1}: {run['wall']:.2f} s wall ({run['run_seconds']:.2f} s in run.json), "
                    f"first request after {run['start_up']:.2f} s, span at the servers {run['span']:.2f} s, "
                    f"exit {run['tail']:.2f} s after the last; {run['requests']} requests, "
                    f"{run['too_many']} x 429, {run['cpu']:.2f} s CPU"
                    + (f"; INVALID: {run['invalid']}" if run["invalid"] else ""),
                    flush=True,
                )
        finally:
            for burner in burners:
                stop(burner)
            stop(server)
    walls = [float(r["wall"]) for r in runs]
    print(
        f"{len(SHOPS)} endpoints x {PRODUCTS} products, pages of {PAGE_SIZE} ({pages} requests each), "
        f"{RATE} requests per {WINDOW:g} s sliding window at the server and in flow"
        + (f"; under load: {len(burners)} CPU burners" if args.under_load else "")
    )
    print(
        f"floor: request k waits floor(k / {RATE}) windows, the last (k = {pages - 1}) "
        f"{math.floor((pages - 1) / RATE)} x {WINDOW:g} s = {floor:.2f} s after the first"
    )
    print(f"wall (process start to exit): {spread(walls, '.2f')} s")
    print(f"in run.json:                  {spread([float(r['run_seconds']) for r in runs], '.2f')} s")
    print(f"spawn to first request:       {spread([float(r['start_up']) for r in runs], '.2f')} s")
    print(f"span at the servers:          {spread([float(r['span']) for r in runs], '.2f')} s")
    print(f"last request to exit:         {spread([float(r['tail']) for r in runs], '.2f')} s")
    print(f"wall / floor:                 {spread([w / floor for w in walls], '.2f')}")
    print(f"CPU:                          {spread([float(r['cpu']) for r in runs], '.2f')} s")
    too_many = sum(int(r["too_many"]) for r in runs)
    invalid = sum(1 for r in runs if r["invalid"])
    within = sum(w <= goal for w in walls)
    print(
        f"429s: {too_many} in {len(runs)} runs; invalid runs: {invalid}; "
        f"goal: wall <= {SLACK:g} x {floor:.2f} + {ALLOWANCE:g} = {goal:.2f} s "
        f"(median {statistics.median(walls):.2f} s, {within} of {len(walls)} runs within)"
    )
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main())
