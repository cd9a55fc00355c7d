"""What flow's runtime costs over hand-written async generators.

The same 5-stage chain, items in page-sized batches of 20 records:

    source (batches of 20) -> pass -> pass -> pass -> sink (counts)

(a) as a flow graph: `sequence -> merge -> merge -> merge -> collect`, run by
    the engine (source pump, bounded buffer, a guard per stage counting items
    and catching errors);
(b) hand-written: the same five stages as five async generators chained
    directly, the last (the sink) consumed by a counting loop.

Both run in this process, back to back in pairs, `--repeats` pairs (the
graph file is parsed and checked once, outside the timing). Printed: medians
of records/s per wall second and per CPU second, and the ratio (a)/(b) as
the median of the pairs' ratios with their range (a pair shares the
machine's state, so its ratio is steadier than a ratio of medians on a
shared machine). Goal: >= 0.8.

    python bench/engine_overhead.py [--records 2000000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any

GRAPH = """\
version: 1
run: {{deadline: 10m, buffer: 8}}
nodes:
  chain:
    pipe:
      - sequence: {{items: {records}, batch: 20}}
      - merge
      - merge
      - merge
      - collect
"""


async def hand_written(records: int) -> int:
    async def source() -> AsyncIterator[list[dict[str, Any]]]:
        for start in range(0, records, 20):
            yield [{"source": "chain", "n": n} for n in range(start, min(start + 20, records))]

    async def passing(items: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for item in items:
            yield item

    async def sink(items: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for item in items:  # like `collect` without a path: pass on to be counted
            yield item

    count = 0
    async for batch in sink(passing(passing(passing(source())))):
        count += len(batch)
    return count


def load_graph(records: int) -> Any:
    """Parse and check the graph once: loading is not per-record work."""
    from flow.graph import check
    from flow.registry import default_registry
    from flow.spec import parse_spec

    spec = parse_spec(GRAPH.format(records=records), default_registry(), env={})
    assert not check(spec)
    return spec


async def with_flow(spec: Any, out_dir: str) -> int:
    from flow.runtime import Runtime

    result = await Runtime(spec, out_dir=out_dir).run()
    assert result.status == "completed", result.errors
    return result.nodes["chain"].stages[-1].items_out * 20


def timed(run: Any) -> tuple[float, float]:
    """(records per wall second, records per CPU second)."""
    started, cpu = time.perf_counter(), time.process_time()
    count = asyncio.run(run)
    return count / (time.perf_counter() - started), count / (time.process_time() - cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    flows, hands = [], []
    spec = load_graph(args.records)
    with tempfile.TemporaryDirectory() as out_dir:
        for _ in range(args.repeats):
            hands.append(timed(hand_written(args.records)))
            flows.append(timed(with_flow(spec, out_dir)))
    print(f"records per run: {args.records:,} in batches of 20; {args.repeats} back-to-back pairs")
    for i, clock in enumerate(("wall", " CPU")):
        flow_rate = statistics.median(f[i] for f in flows)
        hand_rate = statistics.median(h[i] for h in hands)
        ratios = sorted(f[i] / h[i] for f, h in zip(flows, hands, strict=True))
        print(
            f"{clock}: hand-written {hand_rate:>11,.0f} records/s, flow {flow_rate:>11,.0f}; ratio flow / "
            f"hand-written: median of pairs {statistics.median(ratios):.2f} "
            f"(pairs {ratios[0]:.2f}..{ratios[-1]:.2f}), of medians {flow_rate / hand_rate:.2f}"
        )
    print("goal: ratio >= 0.80")
    return 0


if __name__ == "__main__":
    sys.exit(main())
