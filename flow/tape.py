"""Recorded traffic: `flow run --record DIR` writes it, `flow test` plays it.

A stage that gets something from outside the run (fetch: a page) asks the
run's tape first and tells it what it got:

    ctx.taping        "record", "play" or None
    ctx.played(key)   play: the exchange recorded under `key`, or None (never the network)
    ctx.tape(key, e)  record: keep exchange `e` (a dict of JSON values) under `key`

The tape is one gzip-compressed JSON-lines file per node, `DIR/NODE.jsonl.gz`,
one exchange per line with its key: readable with `zcat`, small in git. A
key names what was asked (fetch: the endpoint, path and query, not the host,
so that recordings from the embedded mocks play whatever their port).
Secrets never reach the file: every value the graph took from the
environment is replaced by its `${NAME}` wherever it appears (keys, URLs,
header values, bodies), and headers that carry credentials are redacted by
name. Values shorter than 6 characters are not taken for secrets (as in
every report: see flow._interpolate); a test must then run with the value
it was recorded with.

Recording appends each exchange as it settles (a line per write, from the
event loop); a key recorded twice keeps its last exchange. Playing loads
every file of DIR once.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Literal

from ._interpolate import scrub

Mode = Literal["record", "play"]
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key", "x-auth-token"}
)
REDACTED = "<redacted>"


class TapeError(Exception):
    """A recording that cannot be read; the message names the file and line."""


def _check(entry: Any) -> None:
    """An exchange as `record` writes it: a key, and an answer (status and a
    body) or a failure (error); else ValueError, saying what is missing."""
    if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
        raise ValueError("no 'key'")
    answered = isinstance(entry.get("status"), int) and ("body" in entry or "body_base64" in entry)
    if "error" not in entry and not answered:
        raise ValueError("neither 'error' nor 'status' with 'body'")


class Tape:
    def __init__(self, directory: str | Path, mode: Mode, secrets: dict[str, str] | None = None) -> None:
        self.directory, self.mode = Path(directory), mode
        self.secrets = secrets or {}
        self._files: dict[str, Any] = {}  # node -> open gzip file (record)
        self._played: dict[str, dict[str, dict[str, Any]]] = {}  # node -> key -> exchange (play)
        self.missing: list[tuple[str, str]] = []  # (node, key) asked in play and not recorded
        if mode == "play":
            self._load()
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            for old in self.directory.glob("*.jsonl.gz"):  # a recording is of one run
                old.unlink()

    def _load(self) -> None:
        if not self.directory.is_dir():
            raise TapeError(f"{self.directory}: no recording here (flow run GRAPH --record {self.directory})")
        for path in sorted(self.directory.glob("*.jsonl.gz")):
            node = path.name.removesuffix(".jsonl.gz")
            exchanges = self._played.setdefault(node, {})
            line_number = 0
            try:
                with gzip.open(path, "rt", encoding="utf-8") as f:
                    for line_number, line in enumerate(f, 1):  # noqa: B007 (read in the message)
                        entry = json.loads(line)
                        _check(entry)
                        exchanges[entry["key"]] = entry
            except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
                where = f"{path}:{line_number}" if line_number else str(path)
                raise TapeError(f"{where}: not a recorded exchange ({type(exc).__name__}: {exc})") from None

    def key(self, key: str) -> str:
        return scrub(key, self.secrets) if self.secrets else key

    def played(self, node: str, key: str) -> dict[str, Any] | None:
        found = self._played.get(node, {}).get(self.key(key))
        if found is None:
            self.missing.append((node, self.key(key)))
        return found

    def record(self, node: str, key: str, exchange: dict[str, Any]) -> None:
        entry = {"key": self.key(key), **self.redacted(exchange)}
        f = self._files.get(node)
        if f is None:
            # Open for the run (closed by close()): one file per node, a line per exchange.
            path = self.directory / f"{node}.jsonl.gz"
            f = self._files[node] = gzip.open(path, "wt", encoding="utf-8")  # noqa: SIM115
        f.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def redacted(self, exchange: dict[str, Any]) -> dict[str, Any]:
        """The exchange with credential headers redacted and every value
        taken from the environment named, wherever it appears (a server may
        echo a key in a Link header or the body)."""
        out = dict(exchange)
        headers = out.get("headers")
        if isinstance(headers, dict):
            out["headers"] = {k: REDACTED if k.lower() in SECRET_HEADERS else self._scrubbed(v)
                              for k, v in headers.items()}  # fmt: skip
        for field in ("url", "detail", "body"):
            if isinstance(out.get(field), str):
                out[field] = self._scrubbed(out[field])
        return out

    def _scrubbed(self, text: str) -> str:
        return scrub(text, self.secrets) if self.secrets else text

    @property
    def exchanges(self) -> int:
        return sum(map(len, self._played.values()))

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
