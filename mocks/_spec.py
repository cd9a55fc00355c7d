"""Configuration of one mock server: a frozen, validated struct.

`ServerSpec` is what a `mocks:` entry of graph.yaml decodes into and what the
`python -m mocks` flags build. Text values (durations, ranges, rates) are
checked in `__post_init__`, so a decode error carries its full path, e.g.
`$.mocks.shop_b.latency`. The server turns a spec into parsed numbers once.
Durations and rates are parsed by `flow.units` (one grammar for graph.yaml
and the mocks); only the mocks' `LOW..HIGH` ranges are parsed here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, NamedTuple, TypeVar

import msgspec

# The one duration and rate grammar is flow's (graph.yaml uses it too); the
# spec keeps its text fields and checks them with these parsers.
from flow.units import parse_duration, parse_rate

__all__ = [
    "DEFAULT_API_KEY",
    "STYLES",
    "VENDOR_STYLES",
    "FaultRates",
    "ServerSpec",
    "parse_range",
]

# The catalogue styles (mocks/styles: paginated product APIs) and the
# vendors of a fetch service (mocks/vendors.py); `style` takes either, and a
# test holds `Style` equal to STYLES + VENDOR_STYLES.
STYLES = ("dummyjson", "platzi", "reqres", "jsonserver", "cursor")
VENDOR_STYLES = ("sync_vendor", "async_vendor")
T = TypeVar("T")
Style = Literal["dummyjson", "platzi", "reqres", "jsonserver", "cursor", "sync_vendor", "async_vendor"]
DEFAULT_API_KEY = "reqres-free-v1"  # the public key reqres.in documents

Rate = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Duration = str | float | int  # text as written ("250ms") or seconds


def parse_range(value: Duration) -> tuple[float, float]:
    """`"50ms..400ms"` -> (0.05, 0.4); a single duration is a fixed range."""
    if isinstance(value, str) and ".." in value:
        low_text, _, high_text = value.partition("..")
        low, high = parse_duration(low_text), parse_duration(high_text)
        if low > high:
            raise ValueError(f"range {value!r} runs backwards; write 'LOW..HIGH'")
        return low, high
    fixed = parse_duration(value)
    return fixed, fixed


def _outage(window: str) -> tuple[float, float]:
    if not isinstance(window, str) or ".." not in window:
        raise ValueError(f"an outage is 'START..END' after start, e.g. '2s..6s', got {window!r}")
    return parse_range(window)


def _parsed(field: str, parse: Callable[[Any], T], value: Any) -> T:
    try:
        return parse(value)
    except ValueError as err:
        raise ValueError(f"{field}: {err}") from None


class FaultRates(msgspec.Struct, frozen=True):
    """Share of requests answered with each fault; at most one fault per request."""

    error: float = 0.0  # 500 / 502 / 503 with a JSON body
    hang: float = 0.0  # answer only after `hang` seconds
    truncate: float = 0.0  # 200 with the JSON body cut short
    invalid_json: float = 0.0  # 200 with a trailing comma in the JSON
    html: float = 0.0  # 200 with an HTML error page (a proxy or CDN in the way)
    reset: float = 0.0  # TCP reset, no response at all

    def total(self) -> float:
        return sum(msgspec.structs.astuple(self))


class Timing(NamedTuple):
    """A spec's text values, parsed once, when the spec is made."""

    rate: tuple[int, float] | None  # None: no rate limit
    latency: tuple[float, float]
    hang: float
    outages: list[tuple[float, float]]
    callback_delay: tuple[float, float]  # vendors: wait before an async vendor's callback


class ServerSpec(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, dict=True):
    """One mock server. Every option of `python -m mocks` has a field here."""

    # Durations, ranges and the rate stay as written (the server reports them
    # so) and are parsed once, in `__post_init__`, into `timing`; a bad value
    # fails there, with the field's name, wherever the spec comes from (a
    # graph.yaml, `python -m mocks` flags, Python).

    style: Style = "dummyjson"
    products: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 200
    seed: int = 0
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    page_size: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 20
    max_page_size: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 100
    rate_limit: str | bool = "5/s"  # "off" (or YAML's unquoted off, read as false): no limit
    latency: Duration = 0
    error_rate: Rate = 0.0
    hang_rate: Rate = 0.0
    hang: Duration = "30s"
    truncate_rate: Rate = 0.0
    invalid_json_rate: Rate = 0.0
    html_rate: Rate = 0.0
    reset_rate: Rate = 0.0
    outages: list[str] = []
    outage_status: Annotated[int, msgspec.Meta(ge=400, le=599)] = 503
    heterogeneity: Rate = 0.2
    defect_rate: Rate = 0.03
    duplicate_rate: Rate = 0.02
    api_key: str | None = None
    # Vendors only (sync_vendor, async_vendor); the catalogue styles ignore
    # these, and the vendors ignore the catalogue's (products, page_size...).
    secret: str = "vendor-secret"  # HMAC-SHA256 key signing the async vendor's callbacks
    callback_delay: Duration = "50ms..500ms"
    callback_duplicate_rate: Rate = 0.0  # callbacks sent twice (same body, same signature)
    callback_loss_rate: Rate = 0.0  # callbacks never sent
    failure_rate: Rate = 0.0  # jobs the vendor completes with status "failed"

    def __post_init__(self) -> None:
        # ValueErrors raised here reach the user with the server's path; the
        # message names the field. `timing` lives in the instance dict (the
        # struct is frozen; `dict=True` gives it one), not a field.
        self.__dict__["_timing"] = Timing(
            _parsed("rate_limit", parse_rate, self.rate_limit),
            _parsed("latency", parse_range, self.latency),
            _parsed("hang", parse_duration, self.hang),
            [_parsed("outages", _outage, window) for window in self.outages],
            _parsed("callback_delay", parse_range, self.callback_delay),
        )
        if self.page_size > self.max_page_size:
            raise ValueError(f"page_size {self.page_size} exceeds max_page_size {self.max_page_size}")
        if self.faults.total() > 1.0 + 1e-9:
            raise ValueError(
                f"fault rates add up to {self.faults.total():.3f}; each request gets at most "
                "one fault, so their sum must be <= 1"
            )
        if self.defect_rate + self.duplicate_rate > 1.0 + 1e-9:
            raise ValueError("defect_rate + duplicate_rate must be <= 1")
        if self.callback_duplicate_rate + self.callback_loss_rate > 1.0 + 1e-9:
            raise ValueError(
                "callback_duplicate_rate + callback_loss_rate must be <= 1: a callback is sent "
                "once, twice or never"
            )

    @property
    def timing(self) -> Timing:
        return self.__dict__["_timing"]  # type: ignore[no-any-return]

    @property
    def faults(self) -> FaultRates:
        return FaultRates(
            error=self.error_rate,
            hang=self.hang_rate,
            truncate=self.truncate_rate,
            invalid_json=self.invalid_json_rate,
            html=self.html_rate,
            reset=self.reset_rate,
        )

    @property
    def required_api_key(self) -> str | None:
        """The key the server demands in `x-api-key`; reqres always wants one."""
        if self.api_key is not None:
            return self.api_key or None
        return DEFAULT_API_KEY if self.style == "reqres" else None
