"""A throwaway PostgreSQL server for tests and benchmarks: initdb into a
temporary directory, `postgres` listening on a unix socket only (no TCP
port at all), trust authentication, stopped and removed afterwards.

Uses the server binaries of Debian's `postgresql` package (`.ci/run`
installs it), found under /usr/lib/postgresql/*/bin or on PATH. PostgreSQL
refuses to run as root: as root, the server runs as the package's
`postgres` user (`setpriv`), in a directory it owns.

    with PostgresServer() as server:
        dsn = server.dsn          # postgresql:///postgres?host=/tmp/...&user=...
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any


def _binary(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        raise RuntimeError(f"PostgreSQL's {name} not found: apt-get install -y postgresql")
    return found[-1]


class PostgresServer:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="flow-pg-"))
        self.data, self.socket = self.root / "data", self.root
        self.as_root = os.geteuid() == 0
        self.user = "postgres" if self.as_root else os.environ.get("USER", "postgres")
        self.process: subprocess.Popen[bytes] | None = None
        self.log: Any = None

    @property
    def dsn(self) -> str:
        return f"postgresql:///postgres?host={self.socket}&user={self.user}"

    def _as_owner(self, args: list[str]) -> list[str]:
        # setpriv execs the program itself: signals to the process reach postgres.
        switch = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
        return [*switch, *args] if self.as_root else args

    def __enter__(self) -> PostgresServer:
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        init = [_binary("initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust", "--no-sync"]
        done = subprocess.run(self._as_owner(init), capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            shutil.rmtree(self.root, ignore_errors=True)
            raise RuntimeError(f"initdb failed: {done.stderr[-2000:]}")
        # The server's log goes to a file: a pipe nobody reads would fill and stall it.
        self.log = (self.root / "server.log").open("wb")
        quiet = {"stdout": subprocess.DEVNULL, "stderr": self.log}
        server = [_binary("postgres"), "-D", str(self.data), "-k", str(self.socket), "-c", "listen_addresses=",
                  "-c", "fsync=off", "-c", "full_page_writes=off"]  # fmt: skip
        self.process = subprocess.Popen(self._as_owner(server), **quiet)  # type: ignore[call-overload]
        ready = _binary("pg_isready")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # bounded: the server starts in well under a second here
            if (
                subprocess.run([ready, "-h", str(self.socket), "-U", self.user, "-q"], check=False).returncode
                == 0
            ):
                return self
            if self.process.poll() is not None:
                log = (self.root / "server.log").read_text(errors="replace")[-2000:]
                self.__exit__(None, None, None)
                raise RuntimeError(f"postgres exited: {log}")
            time.sleep(0.05)
        self.__exit__(None, None, None)
        raise RuntimeError("postgres did not accept connections within 30 s")

    def __exit__(self, *exc: Any) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: smart shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "log", None) is not None:
            self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)
