"""Run `flow run --cluster` in a network namespace of its own (Ray binds
every interface; inside a fresh namespace only loopback exists, brought up
here), beside mock servers in a process of their own, and write what a
test judges: the run's exit code and output, the servers' /__stats.

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
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from flow.cluster import loopback_up

BASE_PORT = 18100


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("work", type=Path)
    parser.add_argument("--interrupt", type=float)
    parser.add_argument("--kill-shard", type=float)
    parser.add_argument("--graph-says", action="store_true", help="no --cluster flag: the graph's cluster: block")
    parser.add_argument("--ray-head", action="store_true", help="join a cluster started with `ray start --head`")
    args = parser.parse_args()
    loopback_up()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FLOW__"))}
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
        run = subprocess.Popen([sys.executable, "-m", "flow", "run", "g.yaml", *flag, "--out", "o"],
                               cwd=args.work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
        _disturb(run, args)
        stdout, stderr = run.communicate(timeout=120)
        stats = [_get(f"http://{urlsplit(url).netloc}", "/__stats") for url in urls]
    finally:
        mocks.send_signal(signal.SIGINT)
        mocks.communicate(timeout=10)
        if args.ray_head:
            ray = str(Path(sys.executable).with_name("ray"))
            subprocess.run([ray, "stop", "--force"], env=env, check=False, capture_output=True)
    result = {"code": run.returncode, "stdout": stdout, "stderr": stderr, "urls": urls, "stats": stats}
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


def _get(base: str, path: str) -> object:
    with urllib.request.urlopen(base + path, timeout=10) as answer:
        return json.loads(answer.read())


if __name__ == "__main__":
    sys.exit(main())
