"""The unified product record and the converters that produce it.

Converters never raise on odd input: they return a value or raise
`Invalid(reason)`, which the normalize stage turns into a dead letter.

Prices come as floats, ints, "$1,299.00", "1.299,00 €", "1299.00", cents
(with the `cents` converter) or {"amount": "12.50", "currency": "USD"};
`parse_price` returns (amount, currency). The decimal separator is the last
'.' or ',' followed by exactly two digits at the end; other separators are
thousands separators.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from typing import Any

import msgspec

DEFAULT_CATEGORY = "uncategorized"
_CURRENCIES = {"$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY"}
_CODE = re.compile(r"\b([A-Z]{3})\b")
_NUMBER = re.compile(r"^[+-]?[\d.,\s\u00a0\u202f']*\d[\d.,\s\u00a0\u202f']*$")


TIMES = ("processed_at", "timestamp")  # the Product fields that hold ISO 8601 times


def plain_type(kind: Any) -> Any:
    """A field's type without its `| None` (the sinks' column types)."""
    args = [a for a in getattr(kind, "__args__", ()) if a is not type(None)]
    return args[0] if len(args) == 1 and type(None) in getattr(kind, "__args__", ()) else kind


class Invalid(Exception):
    """A value that cannot be normalised; the message is the dead letter's reason."""


class Product(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: str  # unified: "<source>:<source_id>"
    source_id: str
    title: str
    source: str
    price: float
    currency: str
    category: str
    processed_at: str
    timestamp: str | None = None  # event time: when the record was last updated upstream (ISO 8601, UTC)
    quality: float = 1.0
    extra: dict[str, Any] = {}


def event_time(value: Any) -> str | None:
    """An event time as ISO 8601 UTC with milliseconds ("...T10:30:00.000Z"),
    from ISO text (an offset, or none: UTC; a date alone: its midnight) or
    Unix time in seconds or milliseconds (a number, or digits); None when
    missing or unreadable: a product keeps its place without a time (the
    window stage counts it as untimed), and is never dead-lettered for it."""
    if isinstance(value, str):
        return _event_text(value)
    if value is None or isinstance(value, bool):
        return None
    return _unix(value)


@functools.lru_cache(maxsize=8192)
def _event_text(value: str) -> str | None:
    """`event_time` of text; cached: a page's records share their times' text.
    ISO text, or a compact ISO date (20240301); other digits are Unix time."""
    text = value.strip()
    if len(text) == 8 and text.isdigit():  # a compact ISO date, else Unix time
        return _iso_text(text) or _unix(text)
    if not text.lstrip("-").replace(".", "", 1).isdigit():
        return _iso_text(text)
    return _unix(text)


def _unix(value: Any) -> str | None:
    """Unix time in seconds, or in milliseconds past 1e11, as `event_time` gives it."""
    try:
        seconds = float(value)
    except (TypeError, ValueError, OverflowError):  # an integer of hundreds of digits, too
        return None
    if not math.isfinite(seconds):
        return None
    if abs(seconds) >= 1e11:  # milliseconds (1e11 s is the year 5138)
        seconds /= 1000
    return iso_utc(seconds)


@functools.lru_cache(maxsize=8192)
def _iso_text(text: str) -> str | None:
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(text)
        moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):  # not a time; or a time the UTC calendar cannot hold
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@functools.lru_cache(maxsize=8192)
def iso_utc(seconds: float) -> str | None:
    """Unix seconds as flow writes times (ISO 8601, UTC, milliseconds, Z);
    None past the calendar."""
    from datetime import UTC, datetime

    try:
        moment = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_price(value: Any, *, cents: bool = False) -> tuple[float, str | None]:
    """(amount, currency or None). Raises Invalid for missing, negative,
    non-finite or unreadable prices. With `cents`, an integer amount (a JSON
    integer, or a string of digits only) is in minor units; an amount written
    with a decimal separator ("67.19", "$38.58", 38.5) is already in major
    units, whatever the API's native form."""
    currency = None
    if isinstance(value, dict):
        currency = value.get("currency") if isinstance(value.get("currency"), str) else None
        value = value.get("amount", value.get("value"))
    if value is None:
        raise Invalid("price missing")
    if isinstance(value, bool):
        raise Invalid(f"price is a boolean ({value})")
    if isinstance(value, int | float):
        amount, minor = float(value), isinstance(value, int)
    elif isinstance(value, str):
        amount, found = _parse_price_text(value)
        currency, minor = currency or found, value.strip().isdigit()
    else:
        raise Invalid(f"price has type {type(value).__name__}")
    if cents and minor:
        amount /= 100
    if not math.isfinite(amount):
        raise Invalid("price is not a finite number")
    if amount < 0:
        raise Invalid(f"price is negative ({amount:g})")
    return round(amount, 2), (currency.upper() if currency else None)


def _parse_price_text(text: str) -> tuple[float, str | None]:
    currency = None
    stripped = text.strip()
    for symbol, code in _CURRENCIES.items():
        if symbol in stripped:
            currency = code
            stripped = stripped.replace(symbol, "")
    match = _CODE.search(stripped)
    if match:
        currency = match[1]
        stripped = stripped.replace(match[1], "")
    stripped = stripped.strip()
    if not stripped or not _NUMBER.match(stripped):
        raise Invalid(f"price {text[:40]!r} is not a number")
    negative = stripped.startswith("-")
    digits = (
        stripped.lstrip("+-").replace(" ", "").replace("\u00a0", "").replace("\u202f", "").replace("'", "")
    )
    last_sep = max(digits.rfind("."), digits.rfind(","))
    if last_sep != -1 and len(digits) - last_sep - 1 in (1, 2) and digits.count(digits[last_sep]) == 1:
        whole, fraction = digits[:last_sep], digits[last_sep + 1 :]
    else:
        whole, fraction = digits, ""
    whole = whole.replace(",", "").replace(".", "")
    if not whole.isdigit() and whole:
        raise Invalid(f"price {text[:40]!r} is not a number")
    amount = float(f"{whole or '0'}.{fraction or '0'}")
    return (-amount if negative else amount), currency


def flatten_category(value: Any) -> str:
    """A category slug from a string, a {name|slug} object or a list; the
    documented default when missing or empty."""
    if isinstance(value, list):
        value = next((v for v in value if v), None)
    if isinstance(value, dict):
        value = value.get("slug") or value.get("name")
    if value is None or (isinstance(value, str) and not value.strip()):
        return DEFAULT_CATEGORY
    if not isinstance(value, str):
        raise Invalid(f"category has type {type(value).__name__}")
    return slugify(value)


_NOT_SLUG = re.compile(r"[^a-z0-9]+")


@functools.lru_cache(maxsize=4096)  # a catalogue has few categories, each seen again and again
def slugify(text: str) -> str:
    """'Home Decoration' -> 'home-decoration'; accents dropped."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return _NOT_SLUG.sub("-", ascii_text.lower()).strip("-") or DEFAULT_CATEGORY


def clean_title(value: Any) -> str:
    """Trimmed, inner whitespace collapsed (NBSP and em-spaces included)."""
    if not isinstance(value, str):
        raise Invalid("title missing" if value is None else f"title has type {type(value).__name__}")
    title = " ".join(value.split())
    if not title:
        raise Invalid("title is blank")
    return title


def source_id(value: Any) -> str:
    if value is None or isinstance(value, bool) or (isinstance(value, str) and not value.strip()):
        raise Invalid("id missing")
    if isinstance(value, int | str):
        return str(value).strip()
    raise Invalid(f"id has type {type(value).__name__}")
