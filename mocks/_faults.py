"""Fault injection, deterministic under the seed and independent of request order.

A request is keyed by its path and canonical query (the page it asks for);
the n-th request for the same key (n = 0 for the first try, 1 for the first
retry, ...) draws from `text_draw(seed, key, n)`. So under one seed a given
page's first attempt always meets the same fault, its retry meets a fresh
draw, and concurrent clients racing each other do not change who gets what.

One uniform draw picks at most one fault: the rates are laid end to end on
[0, 1) in the order of `KINDS` and the draw lands in one band or in none.
Outage windows are separate: they depend on the time since start only.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from ._hashing import stream_key, text_draw, unit
from ._spec import ServerSpec

KINDS = ("error", "hang", "truncate", "invalid_json", "html", "reset")
ERROR_STATUSES = (500, 502, 503)


@dataclass(frozen=True, slots=True)
class Decision:
    fault: str | None  # one of KINDS, or None
    latency: float  # seconds to wait before answering (hang: the hang time)
    status: int = 200  # for "error": which 5xx


_NO_FAULT = Decision(None, 0.0)


class FaultPlan:
    """Parsed fault settings of one server plus the per-key attempt counters."""

    def __init__(self, spec: ServerSpec) -> None:
        rates = spec.faults
        self._bands: list[tuple[float, str]] = []
        edge = 0.0
        for kind in KINDS:
            rate = getattr(rates, kind)
            if rate > 0:
                edge += rate
                self._bands.append((edge, kind))
        self.latency = spec.timing.latency
        self.hang = spec.timing.hang
        self.outages = spec.timing.outages
        self.outage_status = spec.outage_status
        self._key = stream_key(spec.seed, "fault")
        self._latency_key = stream_key(spec.seed, "latency")
        # Attempts seen per request key; only kept when a draw needs it.
        self._attempts: Counter[str] = Counter()
        self.active = bool(self._bands) or self.latency[1] > 0

    def __repr__(self) -> str:
        bands = ", ".join(f"{kind}<{edge:.3f}" for edge, kind in self._bands)
        return f"FaultPlan(bands=[{bands}], latency={self.latency}, keys={len(self._attempts)})"

    def in_outage(self, t: float) -> bool:
        return any(start <= t < end for start, end in self.outages)

    def decide(self, path: str, query: str) -> Decision:
        if not self.active:
            return _NO_FAULT
        key = path + "?" + "&".join(sorted(query.split("&")))
        attempt = self._attempts[key]
        self._attempts[key] = attempt + 1
        low, high = self.latency
        latency = low
        if high > low:
            latency = low + (high - low) * unit(text_draw(self._latency_key, key, attempt))
        bits = text_draw(self._key, key, attempt)
        u = unit(bits)
        for edge, kind in self._bands:
            if u < edge:
                if kind == "hang":
                    return Decision("hang", max(self.hang, latency))
                status = ERROR_STATUSES[(bits & 0xFF) % 3] if kind == "error" else 200
                return Decision(kind, latency, status)
        return Decision(None, latency)

    def reset(self) -> None:
        self._attempts.clear()


def truncated(body: bytes) -> bytes:
    """Cut a JSON body short, mid-value, as a dropped connection would."""
    return body[: max(1, math.floor(len(body) * 0.6))]


def invalid_json(body: bytes) -> bytes:
    """A trailing comma before the final bracket: what lenient encoders emit."""
    return body[:-1] + b"," + body[-1:]


HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n<body>\n"
    b"<center><h1>502 Bad Gateway</h1></center>\n<hr><center>cloudfront</center>\n"
    b"</body></html>\n"
)
