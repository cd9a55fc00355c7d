"""`merge`: the fan-in point of a node that reads from several nodes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from flow.registry import ANY, SAME, Params, stage


class MergeParams(Params):
    """No parameters."""


@stage("merge", MergeParams, consumes=ANY, produces=SAME, fan_in=True, spans=False)
async def merge(source: AsyncIterator[Any], params: MergeParams, ctx: Any) -> AsyncIterator[Any]:
    """Pass on the items of every input node, in arrival order.

    The engine feeds a node's inputs into one bounded buffer; `merge` marks
    the node as a fan-in point and passes on the union of its inputs' item
    kinds, which every later stage must accept (checked by `flow validate`)."""
    async for item in source:
        yield item


KIND = merge
