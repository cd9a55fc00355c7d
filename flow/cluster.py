"""A graph split over shards, each a Ray async actor running flow's runtime.

`flow run GRAPH --cluster local:N` (flow.cli.cluster) places the graph's
sources over N shards (flow.placement), starts the graph's mocks and a Ray
cluster on this machine, and gives each shard its part of the graph: its
sources and every node they feed (`part`), but the whole run's reports,
which run in the driver on what the shards relay (flow.relay). A shard
writes its outputs in `OUT/shard-I/` and returns its run report; the
driver merges the reports (`merge`: the sources are disjoint, so their
ledgers are too) into `OUT/run.json`.

Sources sharing a named limiter or a server are placed in one shard, so
every budget not leased (stages.http.leases) stays an in-process limiter,
exact. A shard whose process dies
is restarted by Ray (`max_restarts`) and its part run again whole: pages are
fetched again (at least once at the server), and its outputs are rewritten
whole, so each record is in them once; the report counts the restarts.

Ray is imported only here, and only when a graph runs on a cluster.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from .spec import Spec


def part(spec: Spec, sources: list[str]) -> Spec:
    """`spec` with only `sources` among its sources, and the nodes they
    feed: a node none of whose inputs is left goes too (its inputs named by
    wildcard, `*.errors`, stay; they match what is left)."""
    gone = {n for n, node in spec.nodes.items() if node.stages[0].kind.is_source and n not in sources}
    changed = True
    while changed:
        changed = False
        for name, node in spec.nodes.items():
            if name in gone or node.stages[0].kind.is_source:
                continue
            if not [i for i in node.inputs if i.split(".", 1)[0] not in gone]:
                gone.add(name)
                changed = True
    nodes = {}
    for name, node in spec.nodes.items():
        if name not in gone:
            node.inputs[:] = [i for i in node.inputs if i.split(".", 1)[0] not in gone]
            nodes[name] = node
    spec.nodes = nodes
    return spec


def merge(reports: list[dict[str, Any]], shards: list[list[str]], restarts: list[int]) -> dict[str, Any]:
    """One run report from the shards': the ledgers side by side, the
    losses and errors of each (named by shard), the worst status. A source
    of a restarted shard says `restarts: N` in its ledger row: its pages
    were fetched N + 1 times at the server, its counts are the last run's."""
    order = ("interrupted", "deadline", "completed")
    status = min((r["status"] for r in reports), key=order.index, default="completed")
    merged: dict[str, Any] = {"status": status, "lost": [], "ledger": {}, "errors": [], "events": [],
                              "shards": []}  # fmt: skip
    for i, (report, sources) in enumerate(zip(reports, shards, strict=True)):
        merged["ledger"].update(report["ledger"])
        for source in sources if restarts[i] else ():  # ran again whole: its counts are the last run's
            if source in merged["ledger"]:
                merged["ledger"][source]["restarts"] = restarts[i]
        merged["lost"] += [f"shard {i}: {loss}" for loss in report["lost"]]
        merged["errors"] += [{**e, "shard": i} for e in report["errors"]]
        merged["events"] += [{**e, "shard": i} for e in report.get("events", [])]
        merged["shards"].append({"shard": i, "sources": sources, "status": report["status"],
                                 "seconds": report["seconds"], "cpu_seconds": report.get("cpu_seconds"),
                                 "restarts": restarts[i]})  # fmt: skip
    merged["seconds"] = max((r["seconds"] for r in reports), default=0.0)
    return merged


def exit_code(report: dict[str, Any], on_loss: str, fail_on_error: bool = False) -> int:
    """As flow run's: 130 interrupted, 1 deadline or a loss (unless on_loss:
    warn without --fail-on-error), else 0."""
    if report["status"] == "interrupted":
        return 130
    if report["status"] == "deadline":
        return 1
    return 1 if report["lost"] and (on_loss == "fail" or fail_on_error) else 0


class ShardRunner:
    """A shard's body (the Ray actor's class, decorated in `actor_class`).
    Its methods run on the actor's one event loop: `pull` (the driver
    taking what the relays put in the channel, flow.relay) and `stop`
    interleave with `run` there."""

    def __init__(self) -> None:
        import uuid

        from .relay import Channel

        self.runtime: Any = None
        self.channel = Channel()
        # This process's own mark (a restarted actor's is another, on any host): flow.relay.Spool.
        self.token = uuid.uuid4().hex

    async def run(self, text: str, file: str, sets: list[str], env: dict[str, str], refs: dict[str, str],
                  sources: list[str], out_dir: str, cluster: str) -> dict[str, Any]:  # fmt: skip
        from .relay import publish

        publishing: asyncio.Future[None] | None = None
        try:  # the channel ends whatever happens here: the driver's pulls must end
            self.runtime = self._runtime(text, file, sets, env, refs, sources, Path(out_dir), cluster)
            cpu, began = time.process_time(), time.time()
            publishing = asyncio.ensure_future(publish(self.runtime, self.channel))
            result = await self.runtime.run()
        finally:
            if publishing is not None:
                publishing.cancel()
                await asyncio.gather(publishing, return_exceptions=True)
            await self.channel.close()
        return self._report(result, cpu, began)

    def _runtime(self, text: str, file: str, sets: list[str], env: dict[str, str], refs: dict[str, str],
                 sources: list[str], out: Path, cluster: str) -> Any:  # fmt: skip
        from .registry import default_registry
        from .relay import with_relays
        from .runtime import Runtime
        from .spec import parse_spec

        _started(out)
        spec = part(parse_spec(text, default_registry(), file=file, env=env, sets=sets, refs=refs), sources)
        runtime = Runtime(with_relays(spec, self.channel), out_dir=out)
        runtime.resources.cluster = cluster
        runtime.resources.announce = self.channel.say  # to the driver's stderr (ctx.say), as they are made
        return runtime

    def _report(self, result: Any, cpu: float, began: float) -> dict[str, Any]:
        from .relay import figures, renamed

        report: dict[str, Any] = result.report()
        report["token"] = self.token
        report["cpu_seconds"] = round(time.process_time() - cpu, 3)
        report["figures"] = figures(self.runtime, began)
        report["ledger"] = {s: renamed(row) for s, row in report["ledger"].items()}
        report["channel_most"] = self.channel.most
        return report

    async def pull(self, most: int) -> tuple[str, list[tuple[str, Any]], bool]:
        """What the relays put in the channel (waiting for some), and whether
        the channel has ended; with this process's mark (flow.relay.Spool)."""
        items, ended = await self.channel.take(most)
        return self.token, items, ended

    async def stop(self) -> None:
        if self.runtime is not None:
            self.runtime.stop("interrupted")


def actor_class(max_restarts: int) -> Any:
    import ray

    return ray.remote(max_restarts=max_restarts, max_task_retries=max_restarts, num_cpus=0)(ShardRunner)


def _started(out: Path) -> None:
    """One line per start in OUT/shard-I/.attempts: a restarted shard's part runs again."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / ".attempts").open("a") as f:
        f.write(f"{os.getpid()}\n")


def restarts(out_dir: Path) -> int:
    attempts = out_dir / ".attempts"
    return max(0, len(attempts.read_text().splitlines()) - 1) if attempts.exists() else 0
