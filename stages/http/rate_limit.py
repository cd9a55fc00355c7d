"""`rate_limit`: assign each page request a send budget, shared by name.

The limiter travels with the request, so the `fetch` that sends it (in this
node or any node downstream) spaces its attempts by it: first tries,
retries and breaker probes all count. Nodes naming the same limiter share
one budget (several nodes against one host).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

from flow.problems import Problem
from flow.registry import Params, stage
from flow.units import Duration, Rate

from .paging import PageRequest
from .planning import plan_rate_limit


class RateLimitParams(Params):
    rate: Rate = Rate.default("5/s")  # at most this many requests in any sliding window, retries included
    name: str | None = None  # nodes naming the same limiter share one budget (default: the node)
    margin: Duration = Duration.default(0.05)  # spacing beyond the window, for network jitter
    # Leased budgets: each send asks one place (stages.http.leases): under flow run --cluster a Ray
    # actor, so the budget's sources need not share a shard (one process: no change); or a Redis
    # store, one budget for every run, shard and process naming it there (stages.http.redis_budget).
    across_shards: bool = False  # the named budget may span shards (flow run --cluster)
    store: str | None = None  # redis://HOST:PORT/DB: the named budget kept there, shared by every run

    def __post_init__(self) -> None:
        if self.rate.unlimited:
            raise ValueError("rate: 'off' is not a limit; remove the rate_limit stage instead")
        if self.across_shards and not self.name:
            raise ValueError("across_shards: a budget that spans shards is named (name: ...)")
        if self.store is not None:
            if not self.name:
                raise ValueError("store: a budget kept in a store is named (name: ...)")
            from .redis_budget import check_store

            check_store(self.store)


def _one_budget(uses: list[tuple[str, Any]]) -> list[Problem]:
    """Nodes naming the same limiter must give it the same rate and margin."""
    first: dict[str, tuple[str, RateLimitParams]] = {}
    problems = []
    for node, use in uses:
        params = use.params
        name = params.name or node
        seen = first.setdefault(name, (node, params))
        other_node, other = seen
        def budget(p: RateLimitParams) -> tuple[Any, ...]:
            return (p.rate, p.margin, p.across_shards, p.store)

        if budget(params) != budget(other):
            problems.append(
                Problem(
                    use.path,
                    f"limiter '{name}' is {_budget(params)} here but {_budget(other)} in node"
                    f" '{other_node}'; a shared limiter has one budget",
                    "give every use the same rate, margin, across_shards and store, or different names",
                )
            )
    return problems


def _budget(params: RateLimitParams) -> str:
    spans = ", across shards" if params.across_shards else ""
    kept = f", kept at {params.store}" if params.store else ""
    return f"{params.rate} (margin {params.margin}{spans}{kept})"


def _shares(params: RateLimitParams) -> list[str]:
    """A named budget keeps its nodes in one shard, unless it spans shards (leased)."""
    return [f"limiter:{params.name}"] if params.name and not (params.across_shards or params.store) else []


@stage(
    "rate_limit",
    RateLimitParams,
    consumes=PageRequest,
    produces=PageRequest,
    spans=False,
    check=_one_budget,
    plan=plan_rate_limit,
    affinity=_shares,
)
async def rate_limit(
    source: AsyncIterator[PageRequest], params: RateLimitParams, ctx: Any
) -> AsyncIterator[PageRequest]:
    """Give every page request a sliding-window send budget (first tries,
    retries and breaker probes all count) and pass it on."""
    from .limiter import Limiters  # (asyncio) here: flow validate needs only the params

    limiters = ctx.resource("http.limiters", Limiters)
    assert params.rate.count is not None  # 'off' is rejected when decoded
    rate = params.rate
    if params.store is not None:
        from .leases import LeaseLimiter
        from .redis_budget import redis_limiter

        store, name, margin = params.store, params.name or ctx.node, float(params.margin)
        limiter: Any = ctx.resource(("http.redis_budget", name, store), lambda: redis_limiter(
            store, name, rate.count, rate.window, margin), close=LeaseLimiter.close)  # fmt: skip
    elif params.across_shards and ctx.cluster:
        from .leases import lease_limiter

        limiter = ctx.resource(("http.lease", params.name), lambda: lease_limiter(
            ctx.cluster, params.name, rate.count, rate.window, float(params.margin)))  # fmt: skip
    else:
        limiter = limiters.get(params.name or ctx.node, rate.count, rate.window, margin=params.margin)
    replace = msgspec.structs.replace
    seen: set[str] = set()
    async for request in source:
        if request.endpoint not in seen:  # what the limit allows per second, for reports
            seen.add(request.endpoint)
            ctx.gauge("flow.rate_limit", rate.count / rate.window, **{"flow.endpoint": request.endpoint})
        yield replace(request, limiter=limiter)


KIND = rate_limit
