"""The item kinds every node can emit besides its output: its side outputs.

    NODE.errors        ErrorRecord   a page or item that failed for good, or a
                                     stage that raised (node, stage, error, ...)
    NODE.dead_letters  DeadLetter    a record that could not be used: where it
                                     came from, why, and the record as served

Any node may read them (`from: shop_a.errors`, or `*.errors` for every
node's) and route them to any sink. Stage kinds may declare more ports of
their own (`window` emits `NODE.windows`).

Two optional attributes of any item kind (class) concern the engine:
`needs_answer` (a string naming the stage kind that answers it, e.g.
"fetch"): `flow validate` rejects a graph where such an item could end
elsewhere; `abandon(reason)`: called when the engine drops the item (its
node's branch failed), so that whoever waits for its answer stops waiting.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

__all__ = ["PORTS", "DeadLetter", "ErrorRecord", "utc_now"]


def utc_now() -> str:
    """The one timestamp format of flow's outputs: ISO 8601, UTC, milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ErrorRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One error on a run: what failed, where, and when."""

    node: str | None
    stage: str | None
    error: str  # timeout_after_retries, http_404, invalid_json, ValueError, ...
    detail: str = ""
    timestamp: str
    endpoint: str | None = None
    item: int | None = None  # 1-based input item a failing stage had last taken
    fields: dict[str, Any] = {}  # page, attempts, status, url, ...: what the stage knew

    def to_dict(self) -> dict[str, Any]:
        """Flat, as in the reports: the stage's fields beside the fixed ones."""
        out = {"node": self.node, "stage": self.stage, "item": self.item, "error": self.error}
        out["detail"] = self.detail
        if self.endpoint is not None:
            out["endpoint"] = self.endpoint
        return {**out, **self.fields, "timestamp": self.timestamp}


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A record that could not be used, with the record as it was served."""

    node: str
    stage: str
    endpoint: str
    page: int | None
    position: int | None  # on the page, 0-based
    reason: str
    raw: Any = None  # the record as decoded from the page (any JSON value)
    id: Any = None  # the record's own id, when it had a usable one
    timestamp: str


PORTS: dict[str, type] = {"errors": ErrorRecord, "dead_letters": DeadLetter}


def abandon(item: Any, reason: str) -> None:
    """Tell an item that the engine dropped it (see the module doc)."""
    hook = getattr(item, "abandon", None)
    if hook is not None:
        hook(reason)
