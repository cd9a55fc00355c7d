"""flow: records from many unreliable, rate-limited HTTP APIs into one dataset."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
