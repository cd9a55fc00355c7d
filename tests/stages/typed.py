"""Typed list sources for stage tests.

`testing_source` produces `anything`, which `flow validate` cannot check
against what a stage consumes. A `typed_source(name, kind, items)` emits
`items` declared as `kind`, so the graph check takes part in the test; pass
it to `run_graph(..., kinds=[...])` and start a pipe with `name`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from flow.registry import Params, StageKind, stage


class _NoParams(Params):
    """No parameters."""


def typed_source(name: str, kind: type, items: list[Any]) -> StageKind:
    @stage(name, _NoParams, consumes=None, produces=kind)
    async def emit(source: None, params: _NoParams, ctx: Any) -> AsyncIterator[Any]:
        """Emit the test's items."""
        for item in items:
            yield item

    return emit
