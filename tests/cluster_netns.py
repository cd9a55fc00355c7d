"""Run `flow run --cluster` in a network namespace of its own (fixed ports
that no other run can take; only loopback exists there, brought up here),
beside mock servers in a process of their own, and write what a test
judges: the run's exit code and output, the servers' /__stats, and every
socket listening beyond loopback while the run ran.

    unshare -n python tests/cluster_netns.py WORKDIR [--interrupt S] [--kill-shard S]

WORKDIR holds mocks.yaml (a mocks: block) and g.yaml (whose URLs are
http://127.0.0.1:PORT, PORT from 18100 on, one per server in mocks.yaml
order). --interrupt S: SIGINT to the run after S seconds; --kill-shard S:
SIGKILL to shard 1's process after S seconds (its pid is in
o/shard-1/.attempts). Writes WORKDIR/result.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from flow.procfs import exposed, loopback_up

BASE_PORT = 18100


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("work", type=Path)
    parser.add_argument("--interrupt", type=float)
    parser.add_argument("--kill-shard", type=float)
    parser.add_argument("--graph-says", action="store_true", help="no --cluster flag: the graph's cluster: block")
    parser.add_argument("--ray-head", action="store_true", help="join a cluster started with `ray start --head`")
    parser.add_argument("--status-port", type=int, help="--status-port for the run; its /status polled, flow top once")
    parser.add_argument("--network", action="store_true",
                        help="an address besides loopback's (10.77.0.2/24) and a default route from it")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="for the run")
    args = parser.parse_args()
    loopback_up()
    if args.network:  # as on a host with a network: Ray finds an address besides loopback for its node
        # (on lo itself, with a default route from it: no kernel module needed for a second device)
        for command in ("addr add 10.77.0.2/24 dev lo", "route add default dev lo src 10.77.0.2"):
            subprocess.run(["ip", *command.split()], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FLOW__"))}
    env.update(item.split("=", 1) for item in args.env)
    mocks = subprocess.Popen([sys.executable, "-m", "mocks", "--config", "mocks.yaml", "--port", str(BASE_PORT)],
                             cwd=args.work, stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    assert mocks.stdout is not None
    urls = []
    for line in mocks.stdout:
        if line.startswith("serving"):
            break
        urls.append(line.split()[2])
    try:
        flag = [] if args.graph_says else ["--cluster", "local:2"]
        if args.ray_head:  # a cluster that runs already, with token authentication, joined as a client
            env.update(RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0")
            ray = str(Path(sys.executable).with_name("ray"))
            subprocess.run([ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", "6380",
                            "--ray-client-server-port", "10001", "--include-dashboard", "false", "--num-cpus", "2",
                            "--disable-usage-stats"], env=env, check=True, capture_output=True)  # fmt: skip
            flag = ["--cluster", "ray://127.0.0.1:10001"]
        if args.status_port is not None:
            flag += ["--status-port", str(args.status_port)]
        run = subprocess.Popen([sys.executable, "-m", "flow", "run", "g.yaml", *flag, "--out", "o"],
                               cwd=args.work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
        watched: dict[str, list[object]] = {"statuses": [], "top": [], "exposed": []}
        threading.Thread(target=_listeners, args=(run, watched["exposed"]), daemon=True).start()
        if args.status_port is not None:
            threading.Thread(target=_watch, args=(run, args.status_port, watched), daemon=True).start()
        _disturb(run, args)
        stdout, stderr = run.communicate(timeout=120)
        stats = [_get(f"http://{urlsplit(url).netloc}", "/__stats") for url in urls]
    finally:
        mocks.send_signal(signal.SIGINT)
        mocks.communicate(timeout=10)
        if args.ray_head:
            ray = str(Path(sys.executable).with_name("ray"))
            subprocess.run([ray, "stop", "--force"], env=env, check=False, capture_output=True)
    result = {"code": run.returncode, "stdout": stdout, "stderr": stderr, "urls": urls, "stats": stats, **watched}
    (args.work / "result.json").write_text(json.dumps(result))
    return 0


def _disturb(run: subprocess.Popen[str], args: argparse.Namespace) -> None:
    if args.interrupt is not None:
        time.sleep(args.interrupt)
        run.send_signal(signal.SIGINT)
    if args.kill_shard is not None:
        attempts = args.work / "o" / "shard-1" / ".attempts"
        deadline = time.monotonic() + 30
        while not attempts.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(args.kill_shard)
        os.kill(int(attempts.read_text().split()[0]), signal.SIGKILL)


def _listeners(run: subprocess.Popen[str], seen: list[object]) -> None:
    """Every listening socket of the namespace bound beyond loopback, by any
    process, read from the kernel every 0.2 s while the run runs."""
    while run.poll() is None:
        every = {int(p.name) for p in Path("/proc").glob("[0-9]*")}
        seen.extend(found for found in exposed(every) if found not in seen)
        time.sleep(0.2)


def _watch(run: subprocess.Popen[str], port: int, watched: dict[str, list[object]]) -> None:
    """The run's /status every 0.5 s while it runs (each node's counters), and
    `flow top --once` on it once a shard has fetched pages."""
    url = f"http://127.0.0.1:{port}"
    while run.poll() is None:
        time.sleep(0.5)
        try:
            status = _get(url, "/status")
        except OSError:  # not listening yet, or gone
            continue
        assert isinstance(status, dict)
        nodes = {name: node["counters"] for name, node in status["nodes"].items()}
        watched["statuses"].append({"state": status["state"], "elapsed": status["elapsed"], "nodes": nodes})
        if not watched["top"] and any(c.get("pages") for c in nodes.values()):
            top = subprocess.run([sys.executable, "-m", "flow", "top", url, "--once"], capture_output=True,
                                 text=True, timeout=30)  # fmt: skip
            watched["top"].append(top.stdout)


def _get(base: str, path: str) -> object:
    with urllib.request.urlopen(base + path, timeout=10) as answer:
        return json.loads(answer.read())


if __name__ == "__main__":
    sys.exit(main())
