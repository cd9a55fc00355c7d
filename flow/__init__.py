"""flow: records from many unreliable, rate-limited HTTP APIs into one dataset.

The public API, for writing stage kinds and running graphs from Python:

    from flow import Params, stage, StageContext

Names are imported on first use, so `flow --help` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ANY": "registry",
    "SAME": "registry",
    "ConcurrentParams": "registry",
    "Params": "registry",
    "Registry": "registry",
    "StageKind": "registry",
    "default_registry": "registry",
    "stage": "registry",
    "StageContext": "context",
    "DeadLetter": "items",
    "ErrorRecord": "items",
    "Duration": "units",
    "Rate": "units",
    "SpecError": "problems",
    "load_spec": "spec",
    "parse_spec": "spec",
    "check": "graph",
    "Runtime": "runtime",
    "RunResult": "result",
}
__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flow' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"flow.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
