"""Mock e-commerce APIs that behave like the real ones, faults included.

    from mocks import MockServer, ServerSpec, serve

    async with serve({"shop_a": ServerSpec(style="dummyjson")}) as servers:
        url = servers["shop_a"].api_url      # http://127.0.0.1:PORT/products

`python -m mocks --help` runs them from the command line.
"""

from __future__ import annotations

# Re-exported: the mocks parse durations and rates with flow's grammar.
from flow.units import parse_duration, parse_rate

from ._catalogue import Catalogue, Slot
from ._group import serve
from ._ratelimit import SlidingWindowLimit
from ._server import LoopClock, ManualClock, MockServer, SystemClock
from ._spec import STYLES, ServerSpec, parse_range
from .evidence import max_per_window, windows_over_limit

__all__ = [
    "STYLES",
    "Catalogue",
    "LoopClock",
    "ManualClock",
    "MockServer",
    "ServerSpec",
    "SlidingWindowLimit",
    "Slot",
    "SystemClock",
    "max_per_window",
    "parse_duration",
    "parse_range",
    "parse_rate",
    "serve",
    "windows_over_limit",
]
