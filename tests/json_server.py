"""json-server 0.17.4 (from npm: `.ci/json-server` installs it into
.ci/node/), a real API server no one here wrote, started on 127.0.0.1 for a
test over a db.json the test writes."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BINARY = Path(__file__).resolve().parents[1] / ".ci" / "node" / "node_modules" / ".bin" / "json-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def json_server(db: Path, port: int | None = None) -> Iterator[str]:
    """Serve `db` (json-server's db.json) until the block ends; yields the base URL."""
    assert BINARY.exists(), f"{BINARY} is missing: run .ci/json-server (installs json-server 0.17.4 from npm)"
    port = port or free_port()
    log = (db.parent / "json-server.log").open("w")
    process = subprocess.Popen(
        [str(BINARY), "--host", "127.0.0.1", "--port", str(port), str(db)], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:  # ready when it answers (node starts in ~0.5 s)
            try:
                with urllib.request.urlopen(url + "/db", timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log_text = (db.parent / "json-server.log").read_text()
                    raise AssertionError(f"json-server did not start: {log_text}") from None
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def write_db(path: Path, collections: dict[str, list[dict[str, Any]]]) -> Path:
    path.write_text(json.dumps(collections))
    return path
