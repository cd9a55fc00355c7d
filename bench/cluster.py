"""What a Ray cluster gives and costs: `flow run` against `flow run --cluster
local:1` and `local:2`, the same graph, the same servers.

Four mock shops (dummyjson, platzi, reqres, jsonserver) of `--products`
products each, pages of 100, no rate limit and no faults, in their own
process (`python -m mocks`), so that flow's own work bounds the run. The
graph is graph.yaml's chain (benchmarks measure the graph users run)
without rate_limit stages. Each repeat runs, in turn: the plain run (one
process, the baseline), one shard, two shards, and two shards of the graph
without its report node (`2, bare`): the report runs in the driver on what
the shards relay, so the difference is what that fan-in costs. Measured per run: wall
seconds from spawning `flow run` to its exit, products written (the
ledger: records received less dead letters and duplicates), products/s,
and for the cluster runs each shard's CPU seconds, the cluster's start
(Ray started and the actors ready) and the resident memory of Ray's
processes while the shards run.

flow's own cluster listens on loopback only (flow checks, and refuses to
run otherwise), so the benchmark runs on the machine as a user would.

    python bench/cluster.py [--repeats 3] [--products 25000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from throughput import FLOW, default_chain, spread, start_mocks, stop  # shared tools

STYLES = {"shop_a": "dummyjson", "shop_b": "platzi", "shop_c": "reqres", "shop_d": "jsonserver"}
# (name, flags, graph): "bare" is the graph without its report node, whose digests the shards relay
# to the driver (flow.relay): the difference is what the fan-in costs.
TWO = ["--cluster", "local:2"]
SIDES = (("plain", [], "g"), ("1 shard", ["--cluster", "local:1"], "g"), ("2 shards", TWO, "g"),
         ("2, bare", TWO, "bare"))  # fmt: skip


def main() -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--products", type=int, default=25_000, help="per shop")
    args = parser.parse_args()
    flags = ["--products", str(args.products), "--rate-limit", "off", "--page-size", "100",
             "--max-page-size", "100"]  # fmt: skip
    for style in STYLES.values():
        flags += ["--style", style]
    mocks, urls = start_mocks(flags, count=len(STYLES))
    try:
        return measure(args, list(urls.values()))
    finally:
        stop(mocks)


def measure(args: argparse.Namespace, bases: list[str]) -> int:
    shops = {name: (base, style) for (name, style), base in zip(STYLES.items(), bases, strict=True)}
    results: dict[str, list[dict[str, Any]]] = {side: [] for side, _, _ in SIDES}
    with tempfile.TemporaryDirectory(prefix="flow-bench-cluster-") as work:
        chain = default_chain(shops, 100, rate=None, deadline="600s")
        (Path(work) / "g.yaml").write_text(chain)
        bare = yaml.safe_load(chain)
        del bare["nodes"]["page"]  # the report node: the only one that runs in the driver
        (Path(work) / "bare.yaml").write_text(yaml.safe_dump(bare, sort_keys=False))
        expected = len(STYLES) * args.products
        for repeat in range(args.repeats):
            for side, flags, graph in SIDES:
                out = Path(work) / f"{side.replace(' ', '-').replace(',', '')}-{repeat}"
                results[side].append(one_run(Path(work) / f"{graph}.yaml", out, flags))
                got = results[side][-1]
                print(f"repeat {repeat + 1} {side:9}: {got['wall']:.2f} s, {got['products']:,} products",
                      flush=True)  # fmt: skip
    report(results, expected)
    return 0


def one_run(graph: Path, out: Path, flags: list[str]) -> dict[str, Any]:
    started = time.monotonic()
    done = subprocess.run([*FLOW, "run", str(graph), "--out", str(out), "-q", *flags], capture_output=True,
                          text=True, timeout=900, check=False)  # fmt: skip
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"flow run {' '.join(flags)} exited {done.returncode}: {done.stderr[-2000:]}")
    run = json.loads((out / "run.json").read_text())
    products = sum(r["records"]["received"] - r["records"]["dead_letters"] - r["records"]["duplicates"]
                   for r in run["ledger"].values())  # fmt: skip
    shards = run.get("shards", [])
    cluster = run.get("cluster", {})
    return {"wall": wall, "products": products, "cpu": [s["cpu_seconds"] for s in shards],
            "start": cluster.get("start_seconds"), "memory": cluster.get("ray_memory_mb")}  # fmt: skip


def report(results: dict[str, list[dict[str, Any]]], expected: int) -> None:
    plain = [r["wall"] for r in results["plain"]]
    print(f"\n{len(STYLES)} shops, {expected:,} catalogue products in all, pages of 100, no limits; "
          f"median (min..max) of {len(plain)}")  # fmt: skip
    print(f"{'':10} {'wall s':>20} {'products/s':>24} {'wall / plain':>18} {'CPU s per shard':>22}")
    for side, _, _ in SIDES:
        runs = results[side]
        walls = [r["wall"] for r in runs]
        rates = [r["products"] / r["wall"] for r in runs]
        ratios = [w / p for w, p in zip(walls, plain, strict=True)]
        cpu = [c for r in runs for c in r["cpu"]]
        print(f"{side:10} {spread(walls, '.2f'):>20} {spread(rates):>24} {spread(ratios, '.2f'):>18} "
              f"{spread(cpu, '.2f') if cpu else '-':>22}")  # fmt: skip
    for side, _, _ in SIDES[1:3]:
        starts = [r["start"] for r in results[side]]
        memory = [r["memory"] for r in results[side]]
        print(f"{side}: the cluster's start {spread(starts, '.2f')} s,"
              f" Ray's processes {spread(memory, ',.0f')} MB")  # fmt: skip
    # The fan-in, within each repeat: 2 shards with the report node (relayed to the driver) / without.
    fan_in = [w / b for w, b in zip([r["wall"] for r in results["2 shards"]],
                                    [r["wall"] for r in results["2, bare"]], strict=True)]  # fmt: skip
    pairs = zip(results["2 shards"], results["2, bare"], strict=True)
    cpu = [sum(r["cpu"]) / sum(b["cpu"]) for r, b in pairs]
    print(f"the fan-in (report.html in the driver, on what 2 shards relay): wall {spread(fan_in, '.2f')}x, "
          f"the shards' CPU {spread(cpu, '.2f')}x the same run without the report node")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
