"""The mock APIs in a process of their own (`python -m mocks --config`), for
tests whose flow runs are killed or repeated while the servers' request logs
and ground truth must outlive them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

# flow runs of these tests: no telemetry and no overrides from the environment
ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FLOW__"))},
    "PYTHONUNBUFFERED": "1",
}


@contextlib.contextmanager
def mock_servers(folder: Path, mocks: dict[str, Any]) -> Iterator[dict[str, str]]:
    """Start the servers of a `mocks:` block; name -> its API's URL."""
    config = folder / "mocks.yaml"
    config.write_text(yaml.safe_dump({"version": 1, "mocks": mocks}))
    process = subprocess.Popen([sys.executable, "-m", "mocks", "--config", str(config)],
                               stdout=subprocess.PIPE, text=True, env=ENV)  # fmt: skip
    urls: dict[str, str] = {}
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("serving"):
            break
        name, _, url = line.split()[:3]
        urls[name] = url
    try:
        assert set(urls) == set(mocks), urls
        yield urls
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=10)
