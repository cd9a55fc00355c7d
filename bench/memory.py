"""How flow's memory grows with the number of products: peak RSS of `flow run`.

The default graph's chain (graph.yaml's shape): three shops (dummyjson,
platzi, reqres), each paginate -> fetch -> parse -> normalize with pages of
`--page-size` (20, as graph.yaml), then merge -> redact -> quality -> dedupe
(hold 200) -> window (event time, 28 days, by category) -> summary_json and
the SQLite database, and the dead letters to a JSON lines file (the nodes
are read from graph.yaml). Limits off (no rate_limit stages, mocks with `rate_limit: off`),
no latency, no faults; the mocks' usual data (20% of fields in a non-native
form, 3% malformed records, 2% repeated ones). The mocks run in their own
process (`python -m mocks --config`), so the figure is flow's alone; each
size is the catalogue total, split evenly over the three shops.

For each size (`--sizes`, default 10,000 and 1,000,000; `--quick`: 10,000
and 100,000), `--repeats` runs (sizes interleaved): peak RSS of the `flow run`
process (ru_maxrss from wait4), wall seconds from process start to exit,
CPU seconds (user + system), catalogue products per wall second and per CPU
second. A run counts only if it completed with every record received and
its ledger balanced (run.json); else the benchmark stops. Printed: median
(min..max) of each, and the ratio of peak RSS, largest size / smallest.
Goal: <= 1.5x, and <= 200 MB at the largest size.

A 1,000,000-product run takes about 50 s of CPU on a 2-vCPU machine (the
mocks serve 50,000 pages), so the default run takes one to two minutes.

`--where N` runs N products once in this process under tracemalloc instead
and prints the source lines whose live allocations grew most during the
run: where memory goes (docs/benchmarks.md, "Memory").

    python bench/memory.py [--sizes 10000 1000000] [--repeats 1] [--quick] [--page-size 20]
    python bench/memory.py --where 300000 [--top 15]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from throughput import FLOW, Measured, default_chain, run_measured, spread, start_mocks, stop  # shared tools

RATIO_GOAL, MB_GOAL = 1.5, 200.0
SHOPS = {"shop_a": "dummyjson", "shop_b": "platzi", "shop_c": "reqres"}


def split(total: int) -> dict[str, int]:
    """The catalogue total over the three shops, as evenly as it goes."""
    base, extra = divmod(total, len(SHOPS))
    return {name: base + (i < extra) for i, name in enumerate(SHOPS)}


def checked(out: Path, size: int) -> dict[str, int]:
    """Counts of a run; stops the benchmark unless it took in every record
    and its ledger balances."""
    report = json.loads((out / "run.json").read_text())
    ledgers = report["ledger"]
    received = sum(ledgers[name]["records"]["received"] for name in SHOPS)
    unbalanced = {
        name: ledger["records"]["unaccounted"]
        for name, ledger in ledgers.items()
        if any(ledger["records"]["unaccounted"].values())
    }
    failed = sum(ledgers[name]["pages"]["failed"] for name in SHOPS)
    if report["status"] != "completed" or received != size or unbalanced or failed:
        raise SystemExit(
            f"invalid run at {size:,}: status {report['status']}, {received:,} records received, "
            f"{failed} pages failed, unaccounted {unbalanced}"
        )
    written = sum(ledgers[name]["records"]["written"]["report"] for name in SHOPS)
    return {"received": received, "written": written}


@contextlib.contextmanager
def shops_and_graph(size: int, args: argparse.Namespace, work: Path) -> Iterator[Path]:
    """The mocks serving `size` products over the three shops, in their own
    process, while the block runs; yields the graph.yaml reading them."""
    mocks = "mocks:\n" + "".join(
        f"  {name}: {{style: {style}, products: {n}, rate_limit: off}}\n"
        for (name, style), n in zip(SHOPS.items(), split(size).values(), strict=True)
    )
    (work / "mocks.yaml").write_text(mocks)
    server, urls = start_mocks(["--config", str(work / "mocks.yaml")], count=len(SHOPS))
    try:
        graph = work / "graph.yaml"
        shops = {name: (urls[name], style) for name, style in SHOPS.items()}
        graph.write_text(default_chain(shops, args.page_size, rate=None, deadline="60m"))
        yield graph
    finally:
        stop(server)


def one_run(size: int, args: argparse.Namespace, work: Path) -> tuple[Measured, dict[str, int]]:
    with shops_and_graph(size, args, work) as graph:
        out = work / f"out-{size}"
        command = [*FLOW, "run", str(graph), "--out", str(out), "--no-progress", "-q"]
        measured = run_measured(command, timeout=args.timeout)
    if measured.code != 0:
        raise SystemExit(f"flow run at {size:,} exited {measured.code}:\n{measured.output[-3000:]}")
    return measured, checked(out, size)


def where(size: int, args: argparse.Namespace) -> None:
    """Where the memory goes: one run of `size` products in this process
    under tracemalloc (several times slower), sampled every 5 s; prints the
    source lines whose live allocations grew most from the first sample to
    the last (what was allocated there and is still held: a key kept by
    dedupe shows as normalize's line that made the string)."""
    import threading
    import tracemalloc

    from flow.cli import main as flow_main

    samples: list[tracemalloc.Snapshot] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(5):
            ours = [tracemalloc.Filter(False, __file__), tracemalloc.Filter(False, tracemalloc.__file__)]
            samples.append(tracemalloc.take_snapshot().filter_traces(ours))
            del samples[1:-1]  # the first and the latest

    with (
        tempfile.TemporaryDirectory(prefix="flow-bench-") as tmp,
        shops_and_graph(size, args, Path(tmp)) as graph,
    ):
        tracemalloc.start(1)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            code = flow_main(["run", str(graph), "--out", str(Path(tmp) / "out"), "--no-progress", "-q"])
        finally:
            done.set()
            sampler.join()
        checked(Path(tmp) / "out", size)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    if code != 0 or len(samples) < 2:
        raise SystemExit(f"flow run exited {code} after {len(samples)} samples: too short to compare")
    print(f"{size:,} products: traced peak {peak / 1e6:.1f} MB; growth from the first sample to the last:")
    for stat in samples[-1].compare_to(samples[0], "lineno")[: args.top]:
        print(f"  {stat.size_diff / 1e6:+8.2f} MB {stat.count_diff:+9,} blocks  {stat.traceback[0]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", metavar="N", help="default: 10000 1000000")
    parser.add_argument("--quick", action="store_true", help="sizes 10000 and 100000 (about 15 s)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each size, sizes interleaved")
    parser.add_argument("--page-size", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one run may take")
    parser.add_argument("--where", type=int, metavar="N", help="one traced run of N products: what grew")
    parser.add_argument("--top", type=int, default=15, help="lines --where prints")
    args = parser.parse_args()
    if args.where:
        where(args.where, args)
        return 0
    sizes = sorted(args.sizes or ([10_000, 100_000] if args.quick else [10_000, 1_000_000]))
    if any(not 3 <= n <= 3_000_000 for n in sizes):
        parser.error("sizes run from 3 to 3,000,000 (three shops of at most 1,000,000)")
    runs: dict[int, list[Measured]] = {n: [] for n in sizes}
    written: dict[int, int] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="flow-bench-") as tmp:
        for k in range(args.repeats):
            for size in sizes:
                measured, counts = one_run(size, args, Path(tmp))
                runs[size].append(measured)
                written[size] = counts["written"]
                print(
                    f"run {k + 1}, {size:>9,} products: peak RSS {measured.max_rss_mb:6.1f} MB, "
                    f"{measured.wall:6.1f} s wall, {measured.cpu:6.1f} s CPU",
                    flush=True,
                )
    print(
        f"default chain, 3 shops, pages of {args.page_size}, limits off, mocks in their own process; "
        f"{args.repeats} run(s) per size, median (min..max); "
        f"the benchmark took {time.perf_counter() - started:.0f} s"
    )
    print(
        f"{'products':>10} {'written':>10} {'peak RSS MB':>21} {'wall s':>20} {'CPU s':>20} "
        f"{'products/s wall':>24} {'per CPU s':>24}"
    )
    for size in sizes:
        rs = runs[size]
        print(
            f"{size:>10,} {written[size]:>10,} {spread([r.max_rss_mb for r in rs], '.1f'):>21} "
            f"{spread([r.wall for r in rs], '.1f'):>20} {spread([r.cpu for r in rs], '.1f'):>20} "
            f"{spread([size / r.wall for r in rs]):>24} {spread([size / r.cpu for r in rs]):>24}"
        )
    small, large = (statistics.median(r.max_rss_mb for r in runs[n]) for n in (sizes[0], sizes[-1]))
    print(
        f"peak RSS at {sizes[-1]:,} / at {sizes[0]:,}: {large / small:.2f}x (+{large - small:.1f} MB); "
        f"goal: <= {RATIO_GOAL:g}x and <= {MB_GOAL:.0f} MB at the largest size ({large:.1f} MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
