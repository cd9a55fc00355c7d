"""Mock e-commerce APIs that behave like the real ones, faults included, and
mock vendors of a fetch service (sync, and async with signed callbacks).

    from mocks import MockServer, ServerSpec, serve

    async with serve({"shop_a": ServerSpec(style="dummyjson")}) as servers:
        url = servers["shop_a"].api_url      # http://127.0.0.1:PORT/products

`python -m mocks --help` runs them from the command line.
"""

from __future__ import annotations

import importlib
from typing import Any

# Where each public name lives; loaded on first use, so that reading a
# graph's `mocks:` block (ServerSpec) does not import the aiohttp server.
_WHERE = {
    "parse_duration": "flow.units",  # the mocks parse durations and rates with flow's grammar
    "parse_rate": "flow.units",
    "Catalogue": "._catalogue",
    "Slot": "._catalogue",
    "make_server": "._group",
    "serve": "._group",
    "SlidingWindowLimit": "._ratelimit",
    "LoopClock": "._server",
    "ManualClock": "._server",
    "MockServer": "._server",
    "SystemClock": "._server",
    "STYLES": "._spec",
    "VENDOR_STYLES": "._spec",
    "ServerSpec": "._spec",
    "parse_range": "._spec",
    "VendorServer": ".vendors",
    "callback_signature": ".vendors",
    "max_per_window": ".evidence",
    "windows_over_limit": ".evidence",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'mocks' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "STYLES",
    "VENDOR_STYLES",
    "Catalogue",
    "LoopClock",
    "ManualClock",
    "MockServer",
    "ServerSpec",
    "SlidingWindowLimit",
    "Slot",
    "SystemClock",
    "VendorServer",
    "callback_signature",
    "make_server",
    "max_per_window",
    "parse_duration",
    "parse_range",
    "parse_rate",
    "serve",
    "windows_over_limit",
]
