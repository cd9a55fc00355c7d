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
every budget stays an in-process limiter, exact. A shard whose process dies
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
    losses and errors of each (named by shard), the worst status."""
    order = ("interrupted", "deadline", "completed")
    status = min((r["status"] for r in reports), key=order.index, default="completed")
    merged: dict[str, Any] = {"status": status, "lost": [], "ledger": {}, "errors": [], "shards": []}
    for i, (report, sources) in enumerate(zip(reports, shards, strict=True)):
        merged["ledger"].update(report["ledger"])
        merged["lost"] += [f"shard {i}: {loss}" for loss in report["lost"]]
        merged["errors"] += [{**e, "shard": i} for e in report["errors"]]
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
        from .relay import Channel

        self.runtime: Any = None
        self.channel = Channel()

    async def run(self, text: str, file: str, sets: list[str], env: dict[str, str], refs: dict[str, str],
                  sources: list[str], out_dir: str, cluster: str) -> dict[str, Any]:  # fmt: skip
        from .registry import default_registry
        from .relay import figures, publish, renamed, with_relays
        from .runtime import Runtime
        from .spec import parse_spec

        out = Path(out_dir)
        _started(out)
        spec = part(parse_spec(text, default_registry(), file=file, env=env, sets=sets, refs=refs), sources)
        self.runtime = Runtime(with_relays(spec, self.channel), out_dir=out)
        self.runtime.resources.cluster = cluster
        cpu, began = time.process_time(), time.time()
        publishing = asyncio.ensure_future(publish(self.runtime, self.channel))
        try:
            result = await self.runtime.run()
        finally:
            publishing.cancel()
            await asyncio.gather(publishing, return_exceptions=True)
            await self.channel.close()
        report: dict[str, Any] = result.report()
        report["pid"], report["cpu_seconds"] = os.getpid(), round(time.process_time() - cpu, 3)
        report["figures"] = figures(self.runtime, began)
        report["ledger"] = {s: renamed(row) for s, row in report["ledger"].items()}
        report["channel_most"] = self.channel.most
        return report

    async def pull(self, most: int) -> tuple[int, list[tuple[str, Any]], bool]:
        """What the relays put in the channel (waiting for some), and whether
        the channel has ended; with this process's id (flow.relay.Spool)."""
        items, ended = await self.channel.take(most)
        return os.getpid(), items, ended

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


# What marks a Ray process in its command line.
RAY_PROCESSES = (b"raylet", b"gcs_server", b"ray::", b"ray/_private", b"ray/dashboard")


def ray_memory_mb() -> float:
    """The resident memory of this machine's Ray processes (its servers and
    workers), in MB: what a local cluster costs besides the shards' work."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
            cmdline = (status.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if any(mark in cmdline for mark in RAY_PROCESSES):
            rss = next((line.split()[1] for line in text.splitlines() if line.startswith("VmRSS:")), "0")
            total += int(rss)
    return round(total / 1024, 1)


def exposed(pids: set[int] | None = None) -> list[str]:
    """The listening TCP sockets of this machine's Ray processes (and of
    `pids`: the driver's own) that are bound to an address other than
    loopback, as "ADDRESS:PORT (process)": what a local cluster must not have.
    Read from the kernel's tables (/proc/net/tcp, tcp6: this network
    namespace's) and each process's file descriptors."""
    import ipaddress

    listening: dict[str, str] = {}  # socket inode -> ADDRESS:PORT
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            host, port = fields[1].split(":")
            raw = bytes.fromhex(host)  # 32-bit words in the host's (little-endian) order
            address = ipaddress.ip_address(b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)))
            mapped = getattr(address, "ipv4_mapped", None)
            if not (address.is_loopback or (mapped is not None and mapped.is_loopback)):
                at = f"[{address}]" if address.version == 6 else str(address)
                listening[fields[9]] = f"{at}:{int(port, 16)}"
    found = []
    for proc in Path("/proc").glob("[0-9]*") if listening else ():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            if int(proc.name) not in (pids or set()) and not any(mark in cmdline for mark in RAY_PROCESSES):
                continue
            links = [_link(fd) for fd in (proc / "fd").iterdir()]
        except OSError:  # ended meanwhile, or not ours to read
            continue
        name = cmdline.split(b"\0")[0].decode(errors="replace").rsplit("/", 1)[-1]
        found += [f"{listening[link[8:-1]]} ({name})" for link in links
                  if link.startswith("socket:[") and link[8:-1] in listening]  # fmt: skip
    return sorted(found)


def _link(fd: Path) -> str:
    try:
        return os.readlink(fd)
    except OSError:  # closed meanwhile
        return ""


def loopback_up() -> None:
    """`ip link set lo up` without iproute2 (the flags by ioctl): for a run
    in a network namespace of its own (`unshare -n`: the cluster tests),
    where only a loopback that is down exists."""
    import fcntl
    import socket
    import struct

    get_flags, set_flags, up = 0x8913, 0x8914, 0x1  # SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sh", fcntl.ioctl(s, get_flags, struct.pack("16sh", b"lo", 0)))[1]
        fcntl.ioctl(s, set_flags, struct.pack("16sh", b"lo", flags | up))


def restarts(out_dir: Path) -> int:
    attempts = out_dir / ".attempts"
    return max(0, len(attempts.read_text().splitlines()) - 1) if attempts.exists() else 0
