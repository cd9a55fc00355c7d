"""The item kinds of the jobs family."""

from __future__ import annotations

from typing import Any, Literal

import msgspec


class Job(msgspec.Struct, frozen=True):
    """A submitted job on its way to a vendor (its payload as stored: cleaned)."""

    request_id: str
    payload: Any
    created_at: str
    resumed: bool = False  # found running when the service started, and sent again


class JobResult(msgspec.Struct, frozen=True):
    """What became of a job: the vendor's result, or why it failed."""

    request_id: str
    status: Literal["complete", "failed"]
    vendor: str | None = None
    result: Any = None
    error: str | None = None


__all__ = ["Job", "JobResult"]
