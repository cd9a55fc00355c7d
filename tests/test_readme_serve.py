"""The README's `flow serve` examples, run as written: the section's first
block starts the service (in the background here, on a free port instead
of 8000), the second block's curl commands run through the shell one by
one against it (`localhost:8000` following the port)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.json_server import free_port

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)


def test_the_serve_examples_work_as_written(tmp_path):
    text = (ROOT / "README.md").read_text()
    start = text.index("## A job service: `flow serve`")
    blocks = BLOCK.findall(text[start : text.index("\n## ", start + 1)])
    assert [kind for kind, _ in blocks] == ["sh", "sh"]
    serve, calls = blocks[0][1].strip(), blocks[1][1].strip().splitlines()
    assert serve == "flow serve serve.yaml --port 8000"
    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    (tmp_path / "serve.yaml").write_text((ROOT / "serve.yaml").read_text())
    service = subprocess.Popen(shlex.split(serve.replace("8000", str(port))), cwd=tmp_path, env=env,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        _ready(port)
        script = "set -e\n" + "\n".join(line.replace("localhost:8000", f"localhost:{port}") for line in calls)
        done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=60)  # fmt: skip
    finally:
        service.send_signal(signal.SIGINT)  # Ctrl-C
        _, stderr = service.communicate(timeout=30)
    assert done.returncode == 0, done.stderr
    submitted, polled, health = done.stdout.replace("}{", "}\n{").splitlines()[:3]
    assert set(json.loads(submitted)) == {"request_id"}
    job = json.loads(polled)
    assert job["status"] == "complete" and job["vendor"] == "quick" and job["result"]["records"]
    assert json.loads(health)["status"] == "ok"
    assert service.returncode == 0, stderr
    assert (tmp_path / "out-serve" / "serve.json").exists()


def _ready(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("flow serve did not start")
