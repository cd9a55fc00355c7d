"""`flow run GRAPH --cluster local[:N]`: the graph's sources over N shards
(default 2), each a Ray async actor running flow's runtime (flow.cluster).

flow owns the cluster: it starts Ray on this machine for the run (no
dashboard, usage statistics off, every server on 127.0.0.1: checked before
anything runs) and stops it after. The graph's mocks run in the driver, as
for `flow run`. While the shards run, the driver takes what they relay
(flow.relay) and serves their statuses (--status-port). Ctrl-C or SIGTERM
asks every shard to stop and drain within `run.grace`; a second one ends
the shards at once. Then the driver runs the whole run's report nodes and
writes `OUT/run.json` from the shards' reports; its exit code is flow run's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from ._output import Abort, info, out
from ._signals import PRESSES, on_signals, stopper

JOIN_TRIES = 3  # connections to a running cluster's client server
MAX_RESTARTS = 2  # a shard's process that dies is started again this often, its part run again
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": a Ray node that never leaves 127.0.0.1
PULL_GRACE = 30.0  # seconds a shard's channel has to end after its report (its last pull)


def shards_of(target: str, default: int = 2) -> tuple[str, int]:
    """(`local` or a `ray://HOST:PORT` address, shards): `local` -> 2, `local:N`
    -> N; an address -> `default` (the graph's cluster: shards); else refused."""
    if target.startswith("ray://"):
        if not re.fullmatch(r"ray://[^/:\s]+:\d+", target):
            raise Abort(f"--cluster {target}: expected ray://HOST:PORT (a Ray client server)")
        return target, default
    found = re.fullmatch(r"local(?::(\d+))?", target)
    if found is None:
        raise Abort(f"--cluster {target}: expected local, local:N or ray://HOST:PORT")
    shards = int(found[1] or 2)
    if not 1 <= shards <= 64:
        raise Abort(f"--cluster {target}: 1 to 64 shards")
    return "local", shards


def run_cluster(args: argparse.Namespace, spec: Any) -> int:
    from ..cluster import exit_code, merge, restarts
    from ..placement import place
    from ..relay import Spool, driver_nodes
    from .run import write_json_atomically

    for flag, given in (("--resume", args.resume), ("--record", args.record)):
        if given:
            raise Abort(f"{flag} runs in one process: leave out --cluster (and the graph's cluster: block)")
    address, shards = shards_of(args.cluster, spec.cluster.shards if spec.cluster is not None else 2)
    out_dir = Path(args.out or spec.run.out).resolve()  # absolute: a joined cluster's workers start elsewhere
    placement = place(spec, shards)
    used = [(i, sources) for i, sources in enumerate(placement.shards) if sources]
    for line in placement.describe():
        info(f"flow: {line}")
    text = Path(args.graph).read_text(encoding="utf-8")  # each shard parses it, with the mocks' URLs
    costs: dict[str, float] = {}
    spools = [Spool(out_dir / ".relay" / f"shard-{i}") for i, _ in used]
    began = time.time()
    parts = list(zip(used, spools, strict=True))
    reports = asyncio.run(_drive(args, spec, text, out_dir, parts, costs, address))
    merged = merge(reports, [s for _, s in used], [restarts(out_dir / f"shard-{i}") for i, _ in used])
    merged["cluster"] = costs  # the cluster's start (Ray and the actors ready) and its processes' memory
    _relayed(merged, spools, reports)
    if driver_nodes(spec):  # the whole run's reports, on what the shards relayed (flow.relay)
        asyncio.run(_driver_part(spec, spools, reports, began, merged, out_dir))
    for spool in spools:
        spool.discard()
    write_json_atomically(out_dir / "run.json", merged)
    if not args.quiet:  # each source's row, as the shards last said (flow run's final table)
        from .progress import status_rows, table

        out(table(status_rows(_status(parts, "", "ended"))).rstrip("\n"))
    for shard in merged["shards"]:
        again = f", restarted {shard['restarts']}x" if shard["restarts"] else ""
        took = f"{shard['status']} in {shard['seconds']:.2f}s{again}"
        out(f"shard {shard['shard']}: {', '.join(shard['sources'])}: {took}")
    errors = len(merged["errors"])
    outputs = [f"{out_dir}/shard-*/", *merged.get("driver", {}).get("outputs", []), str(out_dir / "run.json")]
    out(f"{merged['status']}: {errors} errors; outputs: {', '.join(outputs)}")
    if merged["lost"] and not args.quiet:
        info("flow: lost: " + "; ".join(merged["lost"]))
    return exit_code(merged, spec.run.on_loss, args.fail_on_error)


async def _drive(
    args: argparse.Namespace, spec: Any, text: str, out_dir: Path,
    used: list[tuple[tuple[int, list[str]], Any]], costs: dict[str, float], address: str = "local",
) -> list[dict[str, Any]]:
    from .run import _no_mocks

    if spec.mocks:
        from mocks import serve
    else:
        serve = _no_mocks
    async with serve(spec.mocks) as servers:
        refs = {name: server.url for name, server in servers.items()}
        started, cluster = time.monotonic(), uuid.uuid4().hex[:12]
        status = await _status_server(args, used, cluster, spec.file)
        try:
            ray = _start_ray(len(used), address)
            try:
                ready = lambda: _costs(costs, started, address)  # noqa: E731 (called once the actors are up)
                return await _shards(ray, args, text, refs, out_dir, used, cluster, ready)
            finally:
                _leave(ray, address, cluster)
        finally:
            if status is not None:
                await status.close()


async def _status_server(args: argparse.Namespace, used: list[Any], cluster: str, graph: str) -> Any:
    """--status-port: the shards' statuses as one (flow.cluster_status), or None."""
    if args.status_port is None:
        return None
    from ..cluster_status import ClusterStatusServer
    from ._status import listen

    server = ClusterStatusServer(lambda state: _status(used, cluster, state, graph), args.status_port)
    return await listen(server, args.status_port)


def _start_ray(shards: int, address: str) -> Any:
    """flow's own cluster on this machine (`local`), or a connection to one
    that runs (`ray://HOST:PORT`, through its client server)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address == "local":
        # Read once, when Ray is imported: the node's address stays 127.0.0.1 (else Ray swaps it for the
        # host's), and every server of Ray binds the node's address, so loopback only (checked: _costs).
        os.environ.setdefault(LOOPBACK_ONLY, "0")
    import ray

    if address == "local":
        ray.init(address="local", num_cpus=shards, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False, configure_logging=False)  # fmt: skip
        return ray
    for attempt in range(JOIN_TRIES):  # the client server may fail to start a session: try again
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
            return ray
        except ConnectionError as exc:
            if attempt == JOIN_TRIES - 1:
                raise Abort(f"--cluster {address}: cannot join ({type(exc).__name__}: {exc})", 1) from None
            time.sleep(1.0)
    return ray


def _leave(ray: Any, address: str, cluster: str) -> None:
    """Stop flow's own cluster; from one that runs on, take away what this
    run left there (its budgets' detached actors) and disconnect."""
    if address != "local":
        from ray.util import list_named_actors

        for name in list_named_actors():
            if name.startswith(f"flow-budget-{cluster}-"):
                ray.kill(ray.get_actor(name))
    ray.shutdown()


async def _shards(
    ray: Any, args: argparse.Namespace, text: str, refs: dict[str, str], out_dir: Path,
    shards: list[tuple[tuple[int, list[str]], Any]], cluster: str, ready: Any,
) -> list[dict[str, Any]]:  # fmt: skip
    from ..cluster import actor_class
    from ..relay import pull

    shard = actor_class(MAX_RESTARTS)
    used = [place for place, _ in shards]
    actors = [shard.remote() for _ in used]
    await asyncio.gather(*(actor.__ray_ready__.remote() for actor in actors))
    ready()  # the cluster is up, the actors too; a local one listens on loopback only, or nothing runs
    env, sets = dict(os.environ), list(args.sets)
    runs = [actor.run.remote(text, args.graph, sets, env, refs, sources, str(out_dir / f"shard-{i}"), cluster)
            for actor, (i, sources) in zip(actors, used, strict=True)]  # fmt: skip
    # Each shard's channel taken as it fills, while the shards run (flow.relay).
    spools = [spool for _, spool in shards]
    said, display = _watching(args, shards, cluster)
    pulls = [asyncio.ensure_future(pull(a, spool, said)) for a, spool in zip(actors, spools, strict=True)]

    def stop() -> None:
        PRESSES.count += 1
        for actor in actors:
            if PRESSES.count > 1:
                ray.kill(actor, no_restart=True)
            else:
                actor.stop.remote()

    drawing = asyncio.ensure_future(display.run()) if display is not None else None
    try:
        with on_signals(stop):
            done = await asyncio.gather(*runs, return_exceptions=True)
            await _pulled(pulls, spools, done)
    finally:
        if drawing is not None:
            drawing.cancel()
            await asyncio.gather(drawing, return_exceptions=True)
    return [r if isinstance(r, dict) else _died(r, s) for r, (_, s) in zip(done, used, strict=True)]


def _watching(args: argparse.Namespace, shards: list[Any], cluster: str) -> tuple[Any, Any]:
    """Where the lines the shards say go (ctx.say: above the live table, or
    to stderr; nowhere with -q), and the live table of the shards' sources
    from their statuses (flow.cli.progress: on a terminal only), or None."""
    display = None
    if not args.no_progress and not args.quiet and sys.stderr.isatty():
        from .progress import Live, status_rows

        display = Live(lambda: status_rows(_status(shards, cluster)))
    said = None if args.quiet else display.say if display is not None else info
    return said, display


def _status(shards: list[Any], cluster: str, state: str = "running", graph: str = "") -> dict[str, Any]:
    """The shards' newest statuses as one (flow.cluster_status)."""
    from ..cluster_status import merged

    return merged([spool for _, spool in shards], [i for (i, _), _ in shards], cluster, graph, state)


async def _pulled(pulls: list[asyncio.Future[None]], spools: list[Any], done: list[Any]) -> None:
    """The pulls' ends, once the shards have reported. A shard's channel ends
    with its run, so its last pull comes soon; one that does not (the
    process that reported died, and a pull went to a fresh one) is given up
    after PULL_GRACE seconds. A spool must hold what the reporting process sent."""
    waiting = await asyncio.wait(pulls, timeout=PULL_GRACE) if pulls else (set(), set())
    for task in waiting[1]:
        task.cancel()
    await asyncio.gather(*pulls, return_exceptions=True)
    for pulling, spool, report in zip(pulls, spools, done, strict=True):
        if pulling in waiting[1]:
            spool.broken = spool.broken or f"its channel did not end within {PULL_GRACE:g}s of its report"
        elif isinstance(report, dict) and spool.token not in (None, report.get("token")):
            spool.broken = spool.broken or "it relayed from a process other than the one that reported"
        spool.close()


def _relayed(merged: dict[str, Any], spools: list[Any], reports: list[dict[str, Any]]) -> None:
    """What each shard relayed to the driver, and a relay that ended early: a loss."""
    for i, (shard, spool, report) in enumerate(zip(merged["shards"], spools, reports, strict=True)):
        most = report.get("channel_most")
        shard["relayed"] = {"items": spool.items, "processes": spool.processes, "channel_most": most}
        if spool.broken:
            merged["lost"].append(f"shard {i}: its relay to the driver ended early ({spool.broken})")


async def _driver_part(
    spec: Any, spools: list[Any], reports: list[dict[str, Any]], began: float, merged: dict[str, Any],
    out_dir: Path,
) -> None:  # fmt: skip
    """Run the driver's nodes (the whole run's reports) on what the shards
    relayed, seeing the run through the shards' figures (flow.relay)."""
    import copy

    from ..relay import driver_nodes, driver_part, install
    from ..runtime import Runtime

    # A shard that never reported ran its part partly: what it relayed is left out, as its ledger is.
    reported = [spool for spool, report in zip(spools, reports, strict=True) if "figures" in report]
    runtime = Runtime(driver_part(copy.copy(spec), reported), out_dir=out_dir)
    install(runtime, spec, [r for r in reports if "figures" in r], began, merged["status"])
    # The first press of the run (none stopped the shards) drains it, into a valid partial report;
    # a second ends it at once.
    with on_signals(stopper(runtime)):
        result = (await runtime.run()).report()
    merged["driver"] = {"nodes": driver_nodes(spec), "status": result["status"], "seconds": result["seconds"],
                        "outputs": runtime.resources.outputs}  # fmt: skip
    if result["status"] == "interrupted":
        merged["status"] = "interrupted"
    failed = [e for e in result["errors"] if e.get("node")]  # its nodes' failures: a gather holds no records
    merged["errors"] += [{**e, "shard": "driver"} for e in result["errors"]]
    if failed:
        merged["lost"].append(f"driver: {len(failed)} error records: the whole run's reports failed")


def _costs(costs: dict[str, float], started: float, address: str) -> None:
    """The cluster's start and memory; and for flow's own cluster, that no
    process of it listens on an address other than loopback (else exit 2)."""
    from ..procfs import exposed, family, memory_mb

    costs["start_seconds"] = round(time.monotonic() - started, 3)
    if address != "local":  # its processes are the cluster's, perhaps elsewhere
        return
    ours = family(os.getpid())  # this driver and what it started: Ray's servers and workers
    costs["ray_memory_mb"] = memory_mb(ours - {os.getpid()})
    if found := exposed(ours):
        raise Abort(f"--cluster local: Ray listens beyond loopback: {', '.join(found)}; a local cluster must "
                    f"not (is {LOOPBACK_ONLY}=0 overridden in the environment?)")  # fmt: skip


def _died(exc: BaseException, sources: list[str]) -> dict[str, Any]:
    """The report of a shard that never reported (killed past its restarts)."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    why = f"the shard ended without a report ({type(exc).__name__}: {first})"
    status = "interrupted" if PRESSES.count else "completed"  # ended by a second signal, or died
    return {"status": status, "lost": [why, *(f"source '{s}' produced nothing" for s in sources)],
            "ledger": {}, "errors": [], "seconds": 0.0}  # fmt: skip
