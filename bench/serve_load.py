"""`flow serve` under load: 200 clients submitting and polling jobs on loopback.

The service is serve.yaml's job service (jobs -> vendor -> redact ->
job_store) in its own process (`flow serve GRAPH --port P`, a fresh
process and an empty job store for every measurement, `-q`), its two mock
vendors in another (`python -m mocks --config`, serve.yaml's settings:
`quick` sync at 20/s, `later` async with signed callbacks at 10/s, 5%
errors), the intake's `max_pending` at 1,000,000 so that it never fills
in a run: a 503 would still be counted, as an error.

The load generator is this process: asyncio + aiohttp, one ClientSession
(connector limit 256, keep-alive), `--clients` tasks (200). Each client
loops: with probability `--submit-share` (0.2) a POST /jobs of a small JSON
payload (a vendor name, a customer's name, e-mail and phone: personal data
the intake cleans before storing), else a GET /jobs/{id} of an id any
client was answered earlier. Warm-up (`--warm-up`, 2 s, not counted), then
the measured window (`--seconds`, 15 s), then the clients finish the
request they are in (each bounded by a 5 s timeout) and stop. A request
counts if it started in the window; its latency is time.perf_counter()
around sending it and reading its whole body. Errors, by kind: 503 (busy),
other 5xx, 4xx, timeouts, connection errors.

Two phases, each measured against flow and against a baseline:

- saturated: no pause between a client's requests, the most each side
  serves. With 200 requests always in flight, the mean latency is
  200 / (requests/s) (Little's law): a p95 <= 50 ms there needs >= 4,000
  requests/s, whatever the server.
- paced (`--rate`, 1,000 requests/s; 0: skipped): every client sends one
  request each clients / rate seconds (its first at a random offset); a
  client late on its schedule sends at once, so a server too slow for the
  rate shows as fewer requests/s than offered. This is the goal's test:
  p95 <= 50 ms for both endpoints at >= 1,000 requests/s.

The baseline (`--bare-server PORT`, this file in its own process): a bare
aiohttp server answering the same routes from a dict (msgspec JSON; no
graph, no store, no vendors): the floor of aiohttp and this load generator
on this machine. The sides alternate, the first rotating per repeat.

Printed per measurement and, over `--repeats` (3), median (min..max) per
endpoint and overall: requests/s, p50/p95/p99 latency, error rate; the
ratios flow / bare (median of the pairs'); the server's CPU seconds over
the window (utime + stime from /proc/PID/stat) and the load generator's
(time.process_time); the jobs' states in the store when the clients stop.
The vendors take 30 jobs/s together, so most submitted jobs are still
pending then: expected, the store is the queue.

    python bench/serve_load.py [--repeats 3] [--seconds 15] [--clients 200] [--submit-share 0.2] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).parent))
from throughput import FLOW, ROOT, spread, start_mocks, stop  # shared tools

GOAL_P95_MS, GOAL_RATE = 50.0, 1000.0
TIMEOUT = 5.0  # one request, at most
ENDPOINTS = ("POST /jobs", "GET /jobs/{id}")
SECRET = "bench-later-secret"

MOCKS = """\
mocks:
  quick: {{style: sync_vendor, latency: 5ms..40ms, error_rate: 0.05, rate_limit: 20/s}}
  later:
    style: async_vendor
    latency: 5ms..20ms
    error_rate: 0.05
    rate_limit: 10/s
    secret: {secret}
    callback_delay: 100ms..1s
    callback_duplicate_rate: 0.1
    callback_loss_rate: 0.02
"""

GRAPH = """\
version: 1
run: {{grace: 2s}}
nodes:
  jobs:
    pipe:
      - jobs: {{store: jobs.db, max_pending: 1000000}}
      - vendor:
          route: vendor
          default: quick
          vendors:
            quick: {{url: "{quick}/v1/process", rate_limit: 20/s}}
            later:
              url: "{later}/v1/jobs"
              mode: async
              rate_limit: 10/s
              secret: {secret}
              callback_timeout: 10s
      - redact
      - job_store: {{store: jobs.db}}
"""

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


# --- the servers -------------------------------------------------------------


def bare_server(port: int) -> None:
    """The baseline: the two routes from a dict, nothing else."""
    import uuid

    from aiohttp import web

    jobs: dict[str, dict[str, Any]] = {}

    def answer(data: Any, status: int = 200) -> web.Response:
        return web.Response(body=_encode(data), status=status, content_type="application/json")

    async def submit(request: web.Request) -> web.Response:
        payload = _decode(await request.read())
        request_id = str(uuid.uuid4())
        jobs[request_id] = {"request_id": request_id, "status": "pending", "vendor": payload.get("vendor"),
                            "result": None, "error": None}  # fmt: skip
        return answer({"request_id": request_id}, 202)

    async def status(request: web.Request) -> web.Response:
        found = jobs.get(request.match_info["id"])
        return answer(found) if found is not None else answer({"error": "no such job"}, 404)

    async def health(request: web.Request) -> web.Response:
        return answer({"status": "ok", "jobs": len(jobs)})

    app = web.Application()
    app.router.add_post("/jobs", submit)
    app.router.add_get("/jobs/{id}", status)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, backlog=1024)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(command: list[str], url: str, log: Path) -> subprocess.Popen[bytes]:
    """`command` in its own process, once GET url/health answers 200 (within 30 s)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"{' '.join(command[:3])}... did not answer {url}/health: {log.read_text()[-2000:]}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def job_states(db: Path) -> dict[str, int]:
    """Jobs by state in flow's store, read-only beside the running service."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return dict(conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())
    finally:
        conn.close()


# --- the load generator --------------------------------------------------------


def payloads(count: int = 64) -> list[bytes]:
    """Small job payloads as clients send them: a vendor and a customer's personal data."""
    rng = random.Random(7)
    names = ["Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov"]
    made = []
    for n in range(count):
        name = rng.choice(names)
        made.append(_encode({
            "vendor": rng.choice(["quick", "quick", "later"]),
            "query": {"sku": f"SKU-{rng.randrange(100000):05d}", "quantity": rng.randint(1, 5)},
            "customer": {"name": name, "email": f"{name.split()[0].lower()}{n}@example.com",
                         "phone": f"+44 20 7946 {rng.randrange(10000):04d}"},
            "note": f"call {name.split()[0]} at +1 415 555 {rng.randrange(10000):04d} when done",
        }))  # fmt: skip
    return made


def kind_of(status: int) -> str | None:
    """None for a success, else the error's kind."""
    if status < 300:
        return None
    if status == 503:
        return "503 busy"
    return "5xx" if status >= 500 else f"{status // 100}xx"


async def load(url: str, pid: int, args: argparse.Namespace, rate: float) -> dict[str, Any]:
    """Run the clients against `url` (server process `pid`): their records and the CPU over the window."""
    import aiohttp

    bodies, ids = payloads(), []
    records: list[tuple[float, int, float, str | None]] = []  # (started, endpoint, seconds, error kind)
    begin = time.perf_counter()
    start, end = begin + args.warm_up, begin + args.warm_up + args.seconds
    interval = args.clients / rate if rate else 0.0
    headers = {"Content-Type": "application/json"}

    async def client(session: aiohttp.ClientSession, rng: random.Random) -> None:
        due = begin + rng.uniform(0, interval)
        while True:  # bounded: no request starts after `end`
            if interval:
                now = time.perf_counter()
                if due > now:
                    await asyncio.sleep(due - now)
                due = max(due + interval, time.perf_counter())  # late: the next at once, no burst
            sent = time.perf_counter()
            if sent >= end:
                return
            submit = not ids or rng.random() < args.submit_share
            kind: str | None
            try:
                if submit:
                    async with session.post(f"{url}/jobs", data=rng.choice(bodies), headers=headers) as resp:
                        body = await resp.read()
                        kind = kind_of(resp.status)
                        if resp.status == 202:
                            ids.append(_decode(body)["request_id"])
                else:
                    async with session.get(f"{url}/jobs/{rng.choice(ids)}") as resp:
                        await resp.read()
                        kind = kind_of(resp.status)
            except TimeoutError:
                kind = "timeout"
            except (aiohttp.ClientConnectionError, OSError):
                kind = "connection"
            except aiohttp.ClientError:
                kind = "other"
            records.append((sent, 0 if submit else 1, time.perf_counter() - sent, kind))

    async def sample() -> tuple[float, float]:
        await asyncio.sleep(start - time.perf_counter())
        server, own = cpu_seconds(pid), time.process_time()
        await asyncio.sleep(end - time.perf_counter())
        return cpu_seconds(pid) - server, time.process_time() - own

    connector = aiohttp.TCPConnector(limit=max(256, args.clients))
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        sampler = asyncio.ensure_future(sample())
        tasks = [asyncio.ensure_future(client(session, random.Random(k))) for k in range(args.clients)]
        _, late = await asyncio.wait(tasks, timeout=args.warm_up + args.seconds + TIMEOUT + 5)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        server_cpu, own_cpu = await sampler
    counted = [r for r in records if start <= r[0] < end]
    result: dict[str, Any] = {"server_cpu": server_cpu, "client_cpu": own_cpu, "submitted": len(ids),
                              "unfinished": len(late)}  # fmt: skip
    for index, name in enumerate((*ENDPOINTS, "all")):
        mine = [r for r in counted if index == 2 or r[1] == index]
        latencies = sorted(r[2] for r in mine)
        errors = Counter(r[3] for r in mine if r[3] is not None)
        result[name] = {
            "requests": len(mine),
            "rps": len(mine) / args.seconds,
            **{f"p{q}": percentile(latencies, q) * 1000 for q in (50, 95, 99)},
            "error_rate": sum(errors.values()) / max(1, len(mine)),
            "errors": errors,
        }
    return result


def percentile(ordered: list[float], q: float) -> float:
    """Nearest rank; nan for no values."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, -(-len(ordered) * q // 100) - 1))]


# --- one measurement -------------------------------------------------------------


def measure(
    side: str, work: Path, urls: dict[str, str], args: argparse.Namespace, rate: float
) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out = work / f"out-{port}"
    if side == "flow":
        graph = work / "serve.yaml"
        graph.write_text(GRAPH.format(quick=urls["quick"], later=urls["later"], secret=SECRET))
        command = [*FLOW, "serve", str(graph), "--port", str(port), "--out", str(out), "-q"]
    else:
        command = [sys.executable, str(Path(__file__).resolve()), "--bare-server", str(port)]
    for base in urls.values():
        urllib.request.urlopen(
            urllib.request.Request(f"{base}/__reset", data=b"", method="POST"), timeout=10
        ).close()
    proc = start_server(command, url, work / f"{side}.log")
    try:
        result = asyncio.run(load(url, proc.pid, args, rate))
        if side == "flow":
            result["jobs"] = job_states(out / "jobs.db")
        result["alive"] = proc.poll() is None
    finally:
        stop(proc)
    result["load"] = os.getloadavg()[0]
    return result


def line(label: str, r: dict[str, Any]) -> str:
    parts = []
    for name in (*ENDPOINTS, "all"):
        e = r[name]
        errors = ", ".join(f"{n} {kind}" for kind, n in sorted(e["errors"].items())) or "no errors"
        parts.append(
            f"{name} {e['rps']:,.0f}/s p50 {e['p50']:.1f} p95 {e['p95']:.1f} p99 {e['p99']:.1f} ms "
            f"({e['requests']:,}, {errors})"
        )
    parts.append(f"CPU server {r['server_cpu']:.1f} s, load generator {r['client_cpu']:.1f} s")
    parts.append(f"load average {r['load']:.2f}")
    jobs = r.get("jobs")
    if jobs is not None:
        states = ", ".join(f"{n:,} {state}" for state, n in sorted(jobs.items()))
        parts.append(f"jobs: {r['submitted']:,} accepted, {sum(jobs.values()):,} in the store: {states}")
    if not r["alive"]:
        parts.append("THE SERVER DIED")
    if r["unfinished"]:
        parts.append(f"{r['unfinished']} clients cancelled")
    return f"{label}: " + "; ".join(parts)


def summary(phase: str, runs: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    print(f"\n{phase}: median (min..max) of {len(runs)}; flow | bare aiohttp | flow / bare")
    for name in (*ENDPOINTS, "all"):
        print(f"  {name}")
        for key, fmt in (("rps", ",.0f"), ("p50", ".1f"), ("p95", ".1f"), ("p99", ".1f")):
            flow, bare = [f[name][key] for f, _ in runs], [b[name][key] for _, b in runs]
            ratios = [f / b if b else float("nan") for f, b in zip(flow, bare, strict=True)]
            unit = "requests/s" if key == "rps" else f"{key} ms"
            print(
                f"    {unit:<11} {spread(flow, fmt):>26} | {spread(bare, fmt):>26} | {spread(ratios, '.2f')}"
            )
        errors = (
            [100 * f[name]["error_rate"] for f, _ in runs],
            [100 * b[name]["error_rate"] for _, b in runs],
        )
        print(f"    {'errors %':<11} {spread(errors[0], '.2f'):>26} | {spread(errors[1], '.2f'):>26}")
    for key, label in (("server_cpu", "CPU server"), ("client_cpu", "CPU loadgen")):
        flow, bare = [f[key] for f, _ in runs], [b[key] for _, b in runs]
        print(f"  {label:<13} {spread(flow, '.1f'):>26} | {spread(bare, '.1f'):>26} s over the window")
    per = [1000 * f["server_cpu"] / max(1, f["all"]["requests"]) for f, _ in runs]
    per_bare = [1000 * b["server_cpu"] / max(1, b["all"]["requests"]) for _, b in runs]
    print(
        f"  {'CPU/request':<13} {spread(per, '.2f'):>26} | {spread(per_bare, '.2f'):>26} ms of the server's"
    )


def met(runs: list[tuple[dict[str, Any], dict[str, Any]]], rate: float) -> tuple[bool, str]:
    p95 = {name: statistics.median(f[name]["p95"] for f, _ in runs) for name in ENDPOINTS}
    rps = statistics.median(f["all"]["rps"] for f, _ in runs)
    # Paced, a client's schedule starts at a random offset: up to one request each short of `rate`.
    enough = rps >= GOAL_RATE if not rate else rate >= GOAL_RATE and rps >= 0.99 * rate
    ok = enough and all(v <= GOAL_P95_MS for v in p95.values())
    said = ", ".join(f"{name} p95 {v:.1f} ms" for name, v in p95.items())
    return ok, f"{rps:,.0f} requests/s, {said}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window")
    parser.add_argument("--warm-up", type=float, default=2.0, help="seconds of load before the window")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument(
        "--submit-share", type=float, default=0.2, help="share of requests that are POST /jobs"
    )
    parser.add_argument(
        "--rate", type=float, default=GOAL_RATE, help="the paced phase's requests/s (0: skipped)"
    )
    parser.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server is not None:
        bare_server(args.bare_server)
        return 0
    phases = [("saturated", 0.0)] + (
        [(f"paced at {args.rate:,.0f} requests/s", args.rate)] if args.rate else []
    )
    results: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {phase: [] for phase, _ in phases}
    print(f"{args.clients} clients, {args.submit_share:.0%} POST /jobs, {args.warm_up:g} s warm-up + "
          f"{args.seconds:g} s measured, a fresh server per measurement; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="flow-bench-") as tmp:
        work = Path(tmp)
        (work / "mocks.yaml").write_text(MOCKS.format(secret=SECRET))
        mocks, urls = start_mocks(["--config", str(work / "mocks.yaml")], count=2)
        try:
            for k in range(args.repeats):
                for phase, rate in phases:
                    sides = ("flow", "bare") if k % 2 == 0 else ("bare", "flow")
                    got = {side: measure(side, work, urls, args, rate) for side in sides}
                    for side in sides:
                        print(line(f"run {k + 1} {phase}, {side}", got[side]), flush=True)
                    results[phase].append((got["flow"], got["bare"]))
        finally:
            stop(mocks)
    for phase, _ in phases:
        summary(phase, results[phase])
    print(
        "\nflow's jobs when the clients stopped: the vendors take 30 jobs/s together (20/s + 10/s), "
        "so most accepted jobs are still pending: expected, the store is the queue"
    )
    goal = f"goal: p95 <= {GOAL_P95_MS:g} ms for POST /jobs and GET /jobs/{{id}}"
    goal += f" at >= {GOAL_RATE:,.0f} requests/s"
    for phase, rate in phases:
        ok, said = met(results[phase], rate)
        print(f"{goal}, {phase}: {'met' if ok else 'NOT met'} ({said})")
    needed = args.clients / GOAL_P95_MS * 1000
    print(
        f"(saturated, {args.clients} requests are always in flight: mean latency = {args.clients} / "
        f"requests/s, so p95 <= {GOAL_P95_MS:g} ms there needs >= {needed:,.0f} requests/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
