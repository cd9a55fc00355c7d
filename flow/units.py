"""Durations and rates: typed values decoded once, from text or numbers.

    Duration   "250ms", "1.5s", "2m", "1h" or a number of seconds -> a float
               of seconds (a `float` subclass: use it wherever seconds go)
    Rate       "5/s", "10/2s", "300/m" -> count per window; "off" -> unlimited

Both are msgspec-decodable through `dec_hook` (pass it to `msgspec.convert`):
a field typed `Duration` holds seconds from the moment its struct is decoded,
and a bad value fails decoding with its full path, e.g. `$.run.deadline`.
`enc_hook` writes them back as text and `schema_hook` describes them in the
JSON Schema. Other types join the same hooks by defining `__flow_decode__`
(a classmethod from the raw value), `__flow_encode__` and `__flow_schema__`.
"""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec

__all__ = ["Duration", "Rate", "dec_hook", "enc_hook", "parse_duration", "parse_rate", "schema_hook"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0, None: 1.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d*)?\s*(?:ms|s|m|h)?|s|m|h)\s*$")


def parse_duration(value: Any) -> float:
    """`"250ms"`, `"1.5s"`, `"2m"`, `"7d"`, `"2w"`, `0.25` (seconds) -> seconds; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a duration such as '250ms' or '2s', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"expected a duration such as '250ms' or '2s', got {value!r}")
        seconds = float(match[1]) * _UNITS[match[2]]
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be finite and >= 0, got {value!r}")
    return seconds


def parse_rate(value: Any) -> tuple[int, float] | None:
    """`"5/s"` -> (5, 1.0); `"10/2s"` -> (10, 2.0); `"off"` -> None (also
    an unquoted YAML `off`, which YAML 1.1 reads as false)."""
    if value is False:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        hint = f"did you mean '{value}/s'?"
        raise ValueError(f"expected a rate such as '5/s', '10/2s' or 'off', got {value}; {hint}")
    if not isinstance(value, str):
        raise ValueError(f"expected a rate such as '5/s', '10/2s' or 'off', got {value!r}")
    if value.strip().lower() in {"off", "none", "0"}:
        return None
    match = _RATE.match(value)
    if match is None:
        hint = f"; did you mean '{value.strip()}/s'?" if value.strip().isdigit() else ""
        raise ValueError(f"expected a rate such as '5/s', '10/2s' or 'off', got {value!r}{hint}")
    count, per = int(match[1]), match[2].strip()
    window = _UNITS[per] if per in _UNITS else parse_duration(per)
    if count < 1 or window <= 0:
        raise ValueError(f"a rate needs at least 1 request per positive window, got {value!r}")
    return count, window


def _field(value: Any) -> Any:
    # A default factory, not a default: msgspec's JSON Schema encodes plain
    # defaults without hooks, and these types need one.
    return msgspec.field(default_factory=lambda: value)


class Duration(float):
    """Seconds, decoded from "250ms" / "2s" / "1m" / a number."""

    @classmethod
    def default(cls, value: Any) -> Any:
        """A struct field default: `timeout: Duration = Duration.default("10s")`."""
        return _field(cls.__flow_decode__(value))

    @classmethod
    def __flow_decode__(cls, value: Any) -> Duration:
        return cls(parse_duration(value))

    def __flow_encode__(self) -> str:
        return f"{round(self * 1000, 6):g}ms" if 0 < self < 1 else f"{float(self):g}s"

    @classmethod
    def __flow_schema__(cls) -> dict[str, Any]:
        return {
            "anyOf": [{"type": "string", "pattern": _DURATION.pattern}, {"type": "number", "minimum": 0}],
            "description": "a duration: '250ms', '2s', '1m', or seconds",
        }

    def __repr__(self) -> str:
        return f"Duration({self.__flow_encode__()!r})"

    def __str__(self) -> str:
        return self.__flow_encode__()


class Rate:
    """At most `count` events per `window` seconds; `count` None: unlimited ("off")."""

    __slots__ = ("count", "window")

    def __init__(self, count: int | None, window: float = 1.0) -> None:
        self.count, self.window = count, float(window)

    @classmethod
    def default(cls, text: str) -> Any:
        """A struct field default: `rate: Rate = Rate.default("5/s")`."""
        return _field(cls.parse(text))

    @classmethod
    def parse(cls, text: str) -> Rate:
        parsed = parse_rate(text)
        return cls(None) if parsed is None else cls(*parsed)

    @property
    def unlimited(self) -> bool:
        return self.count is None

    @classmethod
    def __flow_decode__(cls, value: Any) -> Rate:
        return cls.parse(value)

    def __flow_encode__(self) -> str:
        if self.count is None:
            return "off"
        return f"{self.count}/s" if self.window == 1.0 else f"{self.count}/{self.window:g}s"

    @classmethod
    def __flow_schema__(cls) -> dict[str, Any]:
        pattern = _RATE.pattern + "|^off$"
        return {"type": "string", "pattern": pattern, "description": "a rate: '5/s', '10/2s'"}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rate) and (self.count, self.window) == (other.count, other.window)

    def __hash__(self) -> int:
        return hash((self.count, self.window))

    def __repr__(self) -> str:
        return f"Rate({self.__flow_encode__()!r})"

    def __str__(self) -> str:
        return self.__flow_encode__()


def dec_hook(kind: type, value: Any) -> Any:
    """msgspec's decode hook for types that define `__flow_decode__`."""
    decode = getattr(kind, "__flow_decode__", None)
    if decode is None:
        raise NotImplementedError(f"flow cannot decode {kind!r}")
    return decode(value)


def enc_hook(value: Any) -> Any:
    encode = getattr(value, "__flow_encode__", None)
    if encode is None:
        raise NotImplementedError(f"flow cannot encode {type(value)!r}")
    return encode()


def schema_hook(kind: type) -> dict[str, Any]:
    schema = getattr(kind, "__flow_schema__", None)
    if schema is None:
        raise NotImplementedError(f"no JSON Schema for {kind!r}")
    return schema()
