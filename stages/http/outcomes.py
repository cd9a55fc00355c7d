"""What one fetch comes to (stages.http.fetcher): the page, a failure for
good, and, inside the fetcher, an attempt to retry or a redirect to follow."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = ["FetchFailed", "Fetched", "Hop", "Retry", "Timeouts"]


@dataclass(frozen=True)
class Timeouts:
    total: float = 10.0
    connect: float = 3.0
    read: float = 5.0

    def __str__(self) -> str:
        return f"{self.total:g}s (connect {self.connect:g}s, read {self.read:g}s)"


@dataclass
class Fetched:
    url: str
    status: int
    body: bytes
    headers: Mapping[str, str]
    attempts: int
    decoded: Any = None  # the body as the caller's `decode` made it (None: not decoded)


@dataclass
class FetchFailed:
    url: str
    error: str  # timeout_after_retries, http_503_after_retries, http_404, circuit_open, tls_certificate, ...
    attempts: int
    status: int | None = None
    detail: str = ""



class Retry(NamedTuple):
    error: str
    status: int | None  # None: no answer (a timeout, a connection error)
    detail: str
    retry_after: float | None


class Hop(NamedTuple):
    target: tuple[str, Mapping[str, str] | None, Mapping[str, str] | None]  # url, params, headers
    status: int
    detail: str
