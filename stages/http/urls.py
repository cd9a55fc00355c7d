"""URLs fit for telemetry and reports: secrets out, parsed once per base URL."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_SECRET = re.compile(r"key|token|secret|password|passwd|signature|auth", re.I)


@functools.lru_cache(maxsize=256)
def _base(url: str) -> tuple[str, tuple[tuple[str, str], ...], str, int | None, str]:
    """(scheme://host[:port]/path without credentials, safe query pairs,
    host, port, scheme) of a URL; cached: a run has few base URLs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    query = tuple(_safe_pair(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")), query, host, parts.port, parts.scheme


def _safe_pair(key: str, value: str) -> tuple[str, str]:
    return (key, "REDACTED") if _SECRET.search(key) else (key, value)


def safe_url(url: str, params: Mapping[str, str] | None = None) -> str:
    """`url` with `params` added to its query, values of secret-looking names
    (key, token, auth, ...) replaced and any user:password@ dropped: fit for
    span attributes."""
    base, query, _, _, _ = _base(url)
    pairs = [*query, *(_safe_pair(k, v) for k, v in (params or {}).items())]
    return f"{base}?{urlencode(pairs)}" if pairs else base


def server_of(url: str) -> tuple[str, int]:
    """(host, port) of a URL, the port defaulted from the scheme."""
    _, _, host, port, scheme = _base(url)
    return host, port or (443 if scheme == "https" else 80)
