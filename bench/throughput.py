"""flow against an honest hand-written client doing the same work.

One dummyjson mock (`--products`, default 100,000; rate limit and faults
off, no latency; its usual data: 20% of fields in a non-native form, 3%
malformed records, 2% repeated ones) runs in its own process, started with
`python -m mocks`, so that serving costs neither side. Against it, in
subprocesses, back to back in interleaved rounds (the side that goes first
rotates):

(a) `flow run` of the graph

        paginate (skip_limit, pages of --page-size) -> fetch (concurrency 16,
        retries on) -> parse (schema dummyjson) -> normalize (preset
        dummyjson) -> summary_json, which also takes shop.dead_letters

    summary_json, not `collect` without a path: it is the default graph's
    sink and writes the real dataset (every product as JSON, the dead
    letters with their raw records, per-source price statistics, category
    distribution, summary), so the comparison includes producing the output
    a user gets; `collect` without a path would only count items.

(b) this file with `--client` (see `hand_written`): aiohttp, 16 requests in
    flight (the first page gives the total, then every page), retries on
    errors and 5xx; on a pool of 2 threads each
    page is decoded with msgspec into the five fields the product needs
    (records kept as msgspec.Raw, decoded whole only for a dead letter's raw
    record) and normalized with flow's own pure converters from
    stages/records/product.py (source_id, parse_price, flatten_category,
    clean_title, event_time from meta.updatedAt, the Product struct), so the
    normalization work is identical,
    and the same summary.json written (products, dead letters, per_source
    prices, category distribution, summary). `--hand-decode dict` decodes
    every record whole into a dict, as flow's parse once did, to tell the
    cost of that choice from the engine's.

(c) with `--processes N` (default 1; 0: not run), flow again with
    `normalize: {workers: {processes: N}}`, in the same rotation; run under a
    child subreaper so that its worker processes' CPU is counted. Printed as
    its own line, with its speed relative to flow as shipped: where a core is
    free, the mapping runs beside the event loop.

One untimed warm-up run of each side comes first. A run counts only if its
summary.json holds every product: the mock's records served, less the
malformed ones it reports (GET /__stats truth), with the same price sum and
dead letters on both sides; otherwise the benchmark stops.

Printed: per side the median (min..max) of catalogue products per wall
second (process start to exit, so interpreter start-up and imports are
included) and of CPU seconds (the child's user + system time from wait4),
and the ratios flow / hand-written per wall and per CPU, median of the
pairs' ratios with their range, and ratio of the medians. Goal: >= 0.8 in
both.

    python bench/throughput.py [--products 100000] [--repeats 7] [--page-size 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import signal
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

GOAL = 0.8
ROOT = Path(__file__).resolve().parent.parent
_SCRIPT = Path(sys.executable).with_name("flow")  # the venv's `flow` command
FLOW = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "flow"]

GRAPH = """\
version: 1
run: {{deadline: 10m}}
nodes:
  shop:
    pipe:
      - paginate: {{url: "{url}/products", style: skip_limit, page_size: {page_size}}}
      - fetch: {{concurrency: {concurrency}, retry: {{retries: 3}}}}
      - parse: {{schema: dummyjson}}
      - normalize: {{preset: dummyjson}}
  report:
    from: [shop, shop.dead_letters, "*.errors"]
    pipe:
      - summary_json: {{path: summary.json}}
"""


# --- processes -------------------------------------------------------------


class Measured:
    """One child process: wall seconds from spawn to exit, CPU seconds (user +
    system, its waited-for descendants included), peak RSS, exit code, and
    time.monotonic() at spawn (the clock the mocks log requests by)."""

    def __init__(
        self, wall: float, cpu: float, max_rss_mb: float, code: int, output: str, spawned: float
    ) -> None:
        self.wall, self.cpu, self.max_rss_mb, self.code, self.output = wall, cpu, max_rss_mb, code, output
        self.spawned = spawned


def run_measured(
    args: list[str], timeout: float, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> Measured:
    """Run `args`, wait for it with wait4 to get its own rusage (not that of
    the other children of this process, e.g. the mock servers)."""
    with tempfile.TemporaryFile("w+") as log:
        spawned, started = time.monotonic(), time.perf_counter()
        # Its own process group: a run that times out is killed with everything it started.
        proc = subprocess.Popen(
            args, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env, text=True, start_new_session=True
        )
        deadline = started + timeout
        while True:  # bounded by `timeout`
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise RuntimeError(f"{' '.join(args[:4])}... did not finish within {timeout:.0f}s")
            time.sleep(0.005)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        output = log.read()
    # ru_maxrss is in kilobytes on Linux
    cpu = usage.ru_utime + usage.ru_stime
    return Measured(wall, cpu, usage.ru_maxrss / 1024, proc.returncode, output, spawned)


def start_mocks(flags: list[str], count: int = 1) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """`python -m mocks FLAGS` in its own process: its servers' base URLs by name."""
    args = [sys.executable, "-m", "mocks", *flags]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    urls: dict[str, str] = {}
    for line in proc.stdout:  # ends when the process does
        match = re.match(r"(\S+)\s.*?(http://127\.0\.0\.1:\d+)", line)
        if match:
            urls[match[1]] = match[2]
        if len(urls) == count:
            return proc, urls
    stop(proc)
    raise RuntimeError(f"the mocks did not start: {' '.join(args)}")


def stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def http_json(url: str, method: str = "GET") -> Any:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def spread(values: list[float], fmt: str = ",.0f") -> str:
    """median (min..max)"""
    ordered = sorted(values)
    return f"{statistics.median(ordered):{fmt}} ({ordered[0]:{fmt}}..{ordered[-1]:{fmt}})"


# --- the hand-written client -------------------------------------------------


PAGING = {  # API style -> (paginate style, collection path)
    "dummyjson": ("skip_limit", "/products"),
    "platzi": ("offset", "/api/v1/products"),
    "reqres": ("page", "/api/products"),
    "jsonserver": ("link", "/products"),
}


def default_chain(
    shops: dict[str, tuple[str, str]], page_size: int, *, rate: str | None, deadline: str
) -> str:
    """graph.yaml's own chain (its fetch settings, normalize as shipped, its
    products, report and rejects nodes) over `shops`: node -> (base URL, API
    style); `rate` None: no rate_limit stage (limits off). Read from the
    shipped file, so the benchmarks measure the graph users run."""
    import yaml

    graph = yaml.safe_load((ROOT / "graph.yaml").read_text(encoding="utf-8"))
    graph.pop("mocks", None)
    graph["run"]["deadline"] = deadline
    shop = graph["nodes"]["shop_a"]["pipe"]
    fetch = next(stage for stage in shop if "fetch" in stage)
    nodes: dict[str, Any] = {}
    for name, (url, style) in shops.items():
        paging, path = PAGING[style]
        paginate = {"url": url + path, "style": paging, "page_size": page_size,
                    "headers": {"x-api-key": "reqres-free-v1"}}  # fmt: skip
        limit = [{"rate_limit": {"rate": rate}}] if rate else []
        records = [{"parse": {"schema": style}}, {"normalize": {"preset": style}}]
        pipe = [{"paginate": paginate}, *limit, fetch, *records]
        nodes[name] = {"pipe": pipe}
    rest = {name: node for name, node in graph["nodes"].items() if "from" in node}
    rest["products"]["from"] = list(shops)
    graph["nodes"] = {**nodes, **rest}
    return str(yaml.safe_dump(graph, sort_keys=False))


class Meta(msgspec.Struct):
    updatedAt: Any = None


class Item(msgspec.Struct):
    """The fields of a dummyjson record the product needs; the rest is skipped."""

    id: Any = None
    title: Any = None
    price: Any = None
    category: Any = None
    meta: Meta | None = None  # its event time, meta.updatedAt


class Envelope(msgspec.Struct):
    products: list[msgspec.Raw] = []
    total: int | None = None


def hand_written(url: str, out: Path, page_size: int, concurrency: int, workers: int, decode: str) -> None:
    """The client a careful engineer would write for this job, without flow."""
    import datetime as dt
    from concurrent.futures import ThreadPoolExecutor

    import aiohttp

    from stages.records.product import (
        Invalid,
        Product,
        clean_title,
        event_time,
        flatten_category,
        parse_price,
        source_id,
    )

    decode_page = msgspec.json.Decoder(Envelope).decode
    decode_item = msgspec.json.Decoder(Item).decode
    decode_any = msgspec.json.Decoder().decode
    encode = msgspec.json.Encoder().encode
    source = "shop"

    def now() -> str:
        return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def fields(raw: msgspec.Raw) -> Item:
        if decode == "struct":
            return decode_item(raw)
        record = decode_any(raw)
        if not isinstance(record, dict):
            raise msgspec.ValidationError("a record is not a JSON object")
        meta = record.get("meta")
        updated = Meta(meta.get("updatedAt")) if isinstance(meta, dict) else None
        get = record.get
        return Item(get("id"), get("title"), get("price"), get("category"), updated)

    def work(body: bytes, page: int) -> tuple[int, list[bytes], list[float], Counter[str], list[bytes]]:
        """Decode and normalize one page (in a pool thread): (records,
        encoded products, prices, categories, encoded dead letters)."""
        raws = decode_page(body).products
        stamp = now()
        products, prices, categories, dead = [], [], Counter[str](), []
        for position, raw in enumerate(raws):
            try:
                item = fields(raw)
                sid = source_id(item.id)
                amount, currency = parse_price(item.price)
                category = flatten_category(item.category)
                product = Product(
                    id=f"{source}:{sid}",
                    source_id=sid,
                    title=clean_title(item.title),
                    source=source,
                    price=amount,
                    currency=currency or "USD",
                    category=category,
                    processed_at=stamp,
                    timestamp=event_time(item.meta.updatedAt) if item.meta is not None else None,
                )
            except (Invalid, msgspec.ValidationError) as why:
                record = decode_any(raw)
                rid = record.get("id") if isinstance(record, dict) else None
                reason = str(why)
                letter = {
                    "endpoint": source,
                    "page": page,
                    "position": position,
                    "id": rid if isinstance(rid, int | str) else None,
                    "reason": reason,
                    "raw": record,
                    "timestamp": stamp,
                    "error": "invalid_record",
                    "detail": reason,
                }
                dead.append(encode(letter))
                continue
            products.append(encode(product))
            prices.append(amount)
            categories[category] += 1
        return len(raws), products, prices, categories, dead

    async def main(f: Any) -> None:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor(workers)
        timeout = aiohttp.ClientTimeout(total=10, connect=3, sock_read=5)
        written, records, price_total, categories = 0, 0, 0.0, Counter[str]()
        low, high = math.inf, 0.0
        letters: list[bytes] = []
        async with aiohttp.ClientSession(timeout=timeout) as session:
            f.write(b'{"products": [')

            async def get(page: int) -> bytes:
                params = {"skip": str(page * page_size), "limit": str(page_size)}
                for attempt in range(4):  # a first try and 3 retries
                    try:
                        async with session.get(f"{url}/products", params=params) as response:
                            if response.status == 200:
                                return await response.read()
                            if response.status != 429 and response.status < 500:
                                raise RuntimeError(f"page {page}: HTTP {response.status}")
                    except (aiohttp.ClientError, TimeoutError):
                        if attempt == 3:
                            raise
                    await asyncio.sleep(min(8.0, 0.5 * 2**attempt))
                raise RuntimeError(f"page {page} failed 4 times")

            def write(result: tuple[Any, ...]) -> None:
                nonlocal written, records, price_total, low, high
                n, products, prices, cats, dead = result
                records += n
                for product in products:
                    f.write(b",\n" if written else b"\n")
                    f.write(product)
                    written += 1
                if prices:
                    price_total += sum(prices)
                    low, high = min(low, *prices), max(high, *prices)
                categories.update(cats)
                letters.extend(dead)

            first = await get(0)
            total = decode_page(first).total or 0
            write(await loop.run_in_executor(pool, work, first, 0))
            pages = iter(range(1, -(-total // page_size)))

            async def worker() -> None:
                for page in pages:  # shared: each page is taken once
                    body = await get(page)
                    write(await loop.run_in_executor(pool, work, body, page))

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            f.write(b'\n],\n"errors": [')
            f.write(b",\n".join(letters))
            per_source = {
                source: {
                    "records": records,
                    "products": written,
                    "price_min": round(low, 2) if written else None,
                    "price_avg": round(price_total / written, 2) if written else None,
                    "price_max": round(high, 2) if written else None,
                    "dead_letters": len(letters),
                }
            }
            metrics = {"category_distribution": dict(categories.most_common())}
            summary = {
                "status": "complete",
                "total_products": written,
                "processing_time_seconds": round(time.perf_counter() - started, 3),
                "success_rate": round(written / records, 4) if records else 1.0,
                "sources": [source],
            }
            f.write(b'\n],\n"per_source": %s,\n"metrics": %s,\n' % (encode(per_source), encode(metrics)))
            f.write(b'"summary": %s}\n' % encode(summary))
        pool.shutdown()

    tmp = out.with_name(f".{out.name}.tmp")  # renamed when whole, as flow does
    with open(tmp, "wb") as f:
        asyncio.run(main(f))
    os.replace(tmp, out)


# --- the benchmark -----------------------------------------------------------


def check(summary_path: Path, expected: int, side: str) -> tuple[int, float, int]:
    """(products, price sum, dead letters) of a summary.json; stops the
    benchmark unless it holds every product the server sent."""
    data = json.loads(summary_path.read_bytes())
    products = data["products"]
    if len(products) != expected or data["summary"]["total_products"] != expected:
        raise SystemExit(
            f"invalid run: {side} wrote {len(products):,} products, the server sent {expected:,}"
        )
    return len(products), round(sum(p["price"] for p in products), 2), len(data["errors"])


def one_side(
    side: str, args: argparse.Namespace, url: str, work: Path
) -> tuple[Measured, tuple[int, float, int]]:
    http_json(f"{url}/__reset", "POST")
    out = work / side
    out.mkdir(exist_ok=True)
    if side in ("flow", "processes"):
        graph = work / ("graph.yaml" if side == "flow" else "graph-processes.yaml")
        command = [*FLOW, "run", str(graph), "--out", str(out), "--no-progress", "-q"]
        if side == "processes":  # its worker processes' CPU counted too
            command = [sys.executable, __file__, "--reap", *command]
    else:
        command = [sys.executable, __file__, "--client", url, "--out", str(out / "summary.json")]
        command += ["--page-size", str(args.page_size), "--concurrency", str(args.concurrency)]
        command += ["--hand-decode", args.hand_decode]
    measured = run_measured(command, timeout=args.timeout)
    if measured.code != 0:
        raise SystemExit(f"{side} exited {measured.code}:\n{measured.output[-3000:]}")
    truth = http_json(f"{url}/__stats")
    served = truth["truth"]["served"]
    statuses = truth["counts"]["by_status"]
    if set(statuses) != {"200"}:
        raise SystemExit(f"invalid run: {side}: the server answered {statuses}")
    if served["records"] != args.products:
        raise SystemExit(f"invalid run: {side} was sent {served['records']:,} of {args.products:,} records")
    expected = served["records"] - len(served["malformed"])
    return measured, check(out / "summary.json", expected, side)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved pairs (the machine is noisy)")
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--hand-decode",
        choices=("struct", "dict"),
        default="struct",
        help="hand-written side: decode the 4 fields needed (struct) or every record whole (dict)",
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds one run may take")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="also run flow with normalize on this many worker processes (0: not)",
    )
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)  # run the hand-written client
    parser.add_argument("--reap", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reap:
        return reap(args.reap)
    if args.client:
        sys.path.insert(0, str(ROOT))
        hand_written(args.client, args.out, args.page_size, args.concurrency, 2, args.hand_decode)
        return 0

    flags = ["--style", "dummyjson", "--products", str(args.products), "--rate-limit", "off", "--port", "0"]
    server, urls = start_mocks(flags)
    (url,) = urls.values()
    runs: dict[str, list[Measured]] = {"flow": [], "hand": [], "processes": []}
    sums: set[tuple[int, float, int]] = set()
    try:
        with tempfile.TemporaryDirectory(prefix="flow-bench-") as tmp:
            work = Path(tmp)
            graph = GRAPH.format(url=url, page_size=args.page_size, concurrency=args.concurrency)
            (work / "graph.yaml").write_text(graph)
            pool = f"normalize: {{preset: dummyjson, workers: {{processes: {args.processes}}}}}"
            (work / "graph-processes.yaml").write_text(graph.replace("normalize: {preset: dummyjson}", pool))
            sides = ("hand", "flow", "processes") if args.processes else ("hand", "flow")
            for side in sides:  # warm-up: page cache, the server's first pages
                one_side(side, args, url, work)
            for k in range(args.repeats):
                order = sides[k % len(sides) :] + sides[: k % len(sides)]  # who goes first rotates
                for side in order:
                    measured, sum_ = one_side(side, args, url, work)
                    runs[side].append(measured)
                    sums.add(sum_)
                print(
                    f"pair {k + 1}: flow {runs['flow'][-1].wall:.2f}s wall {runs['flow'][-1].cpu:.2f}s CPU, "
                    f"hand-written {runs['hand'][-1].wall:.2f}s wall {runs['hand'][-1].cpu:.2f}s CPU",
                    flush=True,
                )
    finally:
        stop(server)
    if len(sums) != 1:
        raise SystemExit(
            f"invalid run: the sides' outputs differ (products, price sum, dead letters): {sorted(sums)}"
        )
    ((products, price_sum, dead),) = sums
    n = args.products
    print(
        f"{n:,} catalogue products per run, pages of {args.page_size}, {args.concurrency} in flight; "
        f"{products:,} products written by each side every run (price sum {price_sum:,.2f}), "
        f"{dead:,} dead letters; "
        f"{args.repeats} interleaved pairs, hand-written decoding: {args.hand_decode}"
    )
    flow, hand = runs["flow"], runs["hand"]
    for label, side in (("flow", flow), ("hand-written", hand)):
        print(
            f"{label:<12} {spread([n / r.wall for r in side])} products/s wall, "
            f"{spread([n / r.cpu for r in side])} per CPU s; {spread([r.wall for r in side], '.2f')} s wall, "
            f"{spread([r.cpu for r in side], '.2f')} s CPU"
        )
    for label, rate in (("wall", lambda r: n / r.wall), (" CPU", lambda r: n / r.cpu)):
        ratios = [rate(f) / rate(h) for f, h in zip(flow, hand, strict=True)]
        of_medians = statistics.median(map(rate, flow)) / statistics.median(map(rate, hand))
        print(
            f"{label}: ratio flow / hand-written: median of pairs {spread(ratios, '.2f')}, "
            f"of medians {of_medians:.2f}"
        )
    print(f"goal: ratio >= {GOAL:.2f} in wall and CPU")
    if runs["processes"]:
        procs = runs["processes"]
        pairs = list(zip(flow, procs, strict=True))
        print(
            f"flow, normalize on {args.processes} worker process(es): {spread([n / r.wall for r in procs])} "
            f"products/s wall, {spread([n / r.cpu for r in procs])} per CPU s (its processes' CPU included); "
            f"speed relative to flow as shipped: wall {spread([f.wall / p.wall for f, p in pairs], '.2f')}, "
            f"CPU {spread([f.cpu / p.cpu for f, p in pairs], '.2f')}"
        )
    return 0


def reap(command: list[str]) -> int:
    """Run `command` as a child subreaper (Linux prctl): descendants it
    leaves behind (a fork server, its worker processes) are reparented here
    and waited for, so this process's children rusage holds all their CPU."""
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    child = subprocess.Popen(command)
    code = child.wait()
    while True:  # bounded: descendants exit once flow has (its fork server with it)
        try:
            os.wait()
        except ChildProcessError:
            return code


if __name__ == "__main__":
    sys.exit(main())
