"""Stage kinds: what a name in a `pipe:` means.

A stage kind is a typed params struct plus an async generator, registered
under a name with the item kinds it consumes and produces:

    @stage("merge", Params, consumes=ANY, produces=SAME, fan_in=True)
    async def merge(source, params, ctx):
        ...

The engine closes every stage's generator, downstream first, when its node
ends, so a stage may iterate its source with a plain `async for`.

Item kinds are plain names ("records", "pages", ...). `consumes=None` makes a
source (first in a pipe, no `from:`), `produces=None` a sink (last in a
pipe). `ANY` accepts whatever arrives and `SAME` produces what it consumed,
so generic stages type-check in any position.

Built-in kinds live in the `stages` package; other distributions add theirs
through the entry-point group `flow.stages` (each entry point names a
StageKind).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Annotated, Any

import msgspec

ANY = "any"
SAME = "same"
ENTRY_POINT_GROUP = "flow.stages"
BUILTIN_MODULES = (
    "stages.sequence",
    "stages.merge",
    "stages.collect",
    "stages.paginate",
    "stages.rate_limit",
    "stages.fetch",
    "stages.parse",
    "stages.normalize",
    "stages.dedupe",
    "stages.window",
    "stages.quality",
    "stages.redact",
    "stages.summary_json",
)


class Params(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every stage's params: immutable, unknown keys rejected."""


class ConcurrentParams(Params, kw_only=True):
    """Params of a per-item stage: how many items it works on at once."""

    concurrency: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1
    ordered: bool = True  # pass results on in input order (else as they finish)


Operator = Callable[[AsyncIterator[Any] | None, Any, Any], AsyncIterator[Any]]


@dataclass(frozen=True)
class StageKind:
    name: str
    params: type[Params]
    run: Operator
    consumes: str | None  # None: a source
    produces: str | None  # None: a sink
    fan_in: bool = False  # may start a node that reads from several nodes
    per_item: bool = False  # run is `async def run(item, params, ctx) -> item`, mapped by the engine
    spans: bool = True  # a span per item when tracing (off for pass-through kinds such as merge)
    doc: str = ""
    origin: str = field(default="flow", compare=False)  # "flow" or the entry point's distribution

    @property
    def is_source(self) -> bool:
        return self.consumes is None

    @property
    def is_sink(self) -> bool:
        return self.produces is None

    def output(self, given: str | None) -> str | None:
        """The kind this stage produces when fed `given`."""
        return given if self.produces == SAME else self.produces

    def accepts(self, given: str | None) -> bool:
        return self.consumes in (ANY, given) or given == ANY

    def operator(self, ctx: Any = None) -> Any:
        """This stage as an aiostream operator, to compose stages outside the
        engine: `kind.operator(ctx)(params)` for a source, `stream |
        kind.operator(ctx).pipe(params)` otherwise. The engine itself chains
        the generators directly (aiostream's per-item context costs about
        1 µs per stage, measured in bench/engine_overhead.py's notes)."""
        import aiostream

        run = self.run
        if self.is_source:

            async def source(params: Any) -> AsyncIterator[Any]:
                async for item in run(None, params, ctx):
                    yield item

            source.__name__ = source.__qualname__ = self.name
            return aiostream.operator(source)

        async def stage(items: AsyncIterator[Any], params: Any) -> AsyncIterator[Any]:
            async with aiostream.streamcontext(items) as streamer:
                async for item in run(streamer, params, ctx):
                    yield item

        stage.__name__ = stage.__qualname__ = self.name
        return aiostream.pipable_operator(stage)


def stage(
    name: str,
    params: type[Params],
    *,
    consumes: str | None,
    produces: str | None,
    fan_in: bool = False,
    per_item: bool = False,
    spans: bool = True,
) -> Callable[[Operator], StageKind]:
    """Decorator: the generator becomes a StageKind named `name`.

    With `per_item=True` the function is a coroutine `run(item, params, ctx)`
    returning the output item, and its params must derive from
    ConcurrentParams: the engine maps it over the input with aiostream's
    `map(task_limit=concurrency, ordered=ordered)`, never unbounded.
    `spans=False`: no span per item when tracing (a kind that only passes
    items on)."""
    if per_item and not issubclass(params, ConcurrentParams):
        raise TypeError(f"per-item stage '{name}' needs params derived from ConcurrentParams")

    def register(run: Operator) -> StageKind:
        doc = (run.__doc__ or "").strip()
        return StageKind(name, params, run, consumes, produces, fan_in, per_item, spans, doc)

    return register


class Registry:
    """Stage kinds by name; built-ins first, then entry points."""

    def __init__(self, kinds: list[StageKind] | None = None) -> None:
        self._kinds: dict[str, StageKind] = {}
        for kind in kinds or []:
            self.add(kind)

    def add(self, kind: StageKind) -> None:
        if kind.name in self._kinds:
            raise ValueError(f"stage kind '{kind.name}' is registered twice")
        self._kinds[kind.name] = kind

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def __getitem__(self, name: str) -> StageKind:
        return self._kinds[name]

    def names(self) -> list[str]:
        return sorted(self._kinds)

    def suggest(self, name: str) -> str | None:
        close = difflib.get_close_matches(name, self._kinds, n=1, cutoff=0.6)
        return close[0] if close else None


def default_registry(*, plugins: bool = True) -> Registry:
    """The built-in stage kinds plus, unless `plugins` is off, the installed
    `flow.stages` entry points."""
    registry = Registry([importlib.import_module(module).KIND for module in BUILTIN_MODULES])
    if plugins:
        for point in entry_points(group=ENTRY_POINT_GROUP):
            kind = point.load()
            if not isinstance(kind, StageKind):
                raise TypeError(f"entry point {point.name!r} ({point.value}) is not a flow StageKind")
            registry.add(kind)
    return registry


def describe_params(params: type[Params]) -> list[tuple[str, str, Any]]:
    """(name, type, default or MISSING) of each field, for `flow stages NAME`."""
    info = msgspec.inspect.type_info(params)
    out = []
    for f in info.fields:  # type: ignore[attr-defined]
        default = f.default if f.default is not msgspec.NODEFAULT else msgspec.NODEFAULT
        out.append((f.encode_name, _type_name(f.type), default))
    return out


def _type_name(t: msgspec.inspect.Type) -> str:
    names = {
        msgspec.inspect.IntType: "int",
        msgspec.inspect.FloatType: "float",
        msgspec.inspect.StrType: "str",
        msgspec.inspect.BoolType: "bool",
    }
    for cls, name in names.items():
        if isinstance(t, cls):
            return name
    if isinstance(t, msgspec.inspect.UnionType):
        return " | ".join(_type_name(x) for x in t.types)
    if isinstance(t, msgspec.inspect.NoneType):
        return "null"
    if isinstance(t, msgspec.inspect.ListType):
        return f"list[{_type_name(t.item_type)}]"
    if isinstance(t, msgspec.inspect.LiteralType):
        return " | ".join(repr(v) for v in t.values)
    return type(t).__name__.removesuffix("Type").lower()
