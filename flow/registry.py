"""Stage kinds: what a name in a `pipe:` means.

A stage kind is a typed params struct plus an async generator, registered
under a name with the item kinds (classes) it consumes and produces:

    @stage("parse", ParseParams, consumes=PageResponse, produces=Records)
    async def parse(source, params, ctx):
        async for page in source:
            ...
            yield records

The engine closes every stage's generator, downstream first, when its node
ends, so a stage may iterate its source with a plain `async for`.

Item kinds are classes, checked edge by edge by subclass (`flow validate`).
`consumes=None` makes a source (first in a pipe, no `from:`), `produces=None`
a sink (last in a pipe). `consumes` may be a tuple (a sink reading products
and errors); `ANY` (object) accepts whatever arrives, and `produces=SAME`
passes on what was consumed, so generic stages type-check in any position.
`outputs={"windows": WindowStats}` declares side outputs besides the
built-in `errors` and `dead_letters` (flow.items), readable as `NODE.windows`.

Every kind, built-in or not, registers through the entry-point group
`flow.stages` (each entry point names a StageKind); the engine holds no list
of its own. A kind's module is imported when the kind is first looked up,
so a command loads only the stage kinds its graph uses.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec

from ._entry_points import EntryPoint, entry_points

ANY: type = object
ENTRY_POINT_GROUP = "flow.stages"
BUILTIN_DISTRIBUTION = "flow"
Kinds = tuple[type, ...]  # an edge's item kinds: one class, or several after a fan-in


class _Same:
    def __repr__(self) -> str:
        return "SAME"


SAME: Any = _Same()  # produces what it consumed


def kind_names(kinds: Kinds | None) -> str:
    """`Records`, `ProductBatch | ErrorRecord`, or `nothing`."""
    if not kinds:
        return "nothing"
    return " | ".join("anything" if k is object else k.__name__ for k in kinds)


class Params(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every stage's params: immutable, unknown keys rejected."""


class ConcurrentParams(Params, kw_only=True):
    """Params of a per-item stage: how many items it works on at once."""

    concurrency: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1
    ordered: bool = True  # pass results on in input order (else as they finish)

    @property
    def in_flight(self) -> int:
        """Items worked on at once (a kind may derive it from other params)."""
        return self.concurrency


Operator = Callable[[AsyncIterator[Any] | None, Any, Any], AsyncIterator[Any]]


@dataclass(frozen=True)
class StageKind:
    name: str
    params: type[Params]
    run: Operator
    consumes: Kinds | None  # None: a source
    produces: type | None  # None: a sink; SAME: what it consumed
    fan_in: bool = False  # may start a node that reads from several nodes
    per_item: bool = False  # run is `async def run(item, params, ctx) -> item`, mapped by the engine
    spans: bool = True  # a span per item when tracing (off for pass-through kinds such as merge)
    outputs: Mapping[str, type] = field(default_factory=dict)  # side outputs beyond errors/dead_letters
    # A check across every use of the kind in a graph, run by `flow validate`:
    # given [(node name, StageSpec)], the flow.problems.Problems it finds.
    check: Callable[[list[tuple[str, Any]]], list[Any]] | None = None
    doc: str = ""
    origin: str = field(default=BUILTIN_DISTRIBUTION, compare=False)  # the distribution that registered it
    # A sink whose output appears whole at its end (a file renamed into
    # place): its records count as written only once it ended without error.
    whole: bool = False
    # A sink that adds to what earlier runs wrote (a database), not one that
    # rewrites its output: `flow replay` writes to these only.
    store: bool = False
    # `flow replay`: the items of this kind's input that hold the records of
    # these dead letters (which this kind rejected), to pass through it again.
    replay: Callable[[list[Any]], list[Any]] | None = None
    # `flow plan`: what this kind tells of a source's walk, into a
    # flow.plan.SourcePlan (params, source) -> an awaitable, or None.
    plan: Callable[[Any, Any], Any] | None = None
    # A sink that writes over the network (a database server): `flow test`,
    # which opens no connection, leaves its node out.
    network: bool = False
    # A kind that serves HTTP (ctx.route): its graph runs under `flow serve`,
    # which `flow run` says instead of starting it.
    serves: bool = False
    # What a node using this kind shares and must run with, when a graph is
    # split into shards (flow.placement): params -> keys (`limiter:NAME`).
    affinity: Callable[[Any], list[str]] | None = None
    # A sink that reports on the whole run: in a cluster run its node runs in
    # the driver, fed by what the shards relay (flow.relay), each item
    # through `digest` (item -> the item that crosses: a tally of a batch).
    driver: bool = False
    digest: Callable[[Any], Any] | None = None

    @property
    def is_source(self) -> bool:
        return self.consumes is None

    @property
    def is_sink(self) -> bool:
        return self.produces is None

    def output(self, given: Kinds | None) -> Kinds | None:
        """The kinds this stage produces when fed `given`."""
        if self.produces is None:
            return None
        return given if self.produces is SAME else (self.produces,)

    def rejects(self, given: Kinds | None) -> list[type]:
        """The kinds of `given` this stage cannot consume (empty: it accepts).
        What a generic source produces (`ANY`: not known before the run) is
        not rejected."""
        accepted = self.consumes or ()
        return [k for k in given or () if k is not object and not any(issubclass(k, c) for c in accepted)]

    def drops(self, kind: type) -> bool:
        """Whether the stage takes `kind` only as 'anything' and does not pass
        it on (a generic sink): fine for data, not for a request awaiting its answer."""
        takes_it_as_itself = any(c is not object and issubclass(kind, c) for c in self.consumes or ())
        return not takes_it_as_itself and self.produces is not SAME

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
    consumes: type | tuple[type, ...] | None,
    produces: type | None,
    fan_in: bool = False,
    per_item: bool = False,
    spans: bool = True,
    outputs: Mapping[str, type] | None = None,
    check: Callable[[list[tuple[str, Any]]], list[Any]] | None = None,
    whole: bool = False,
    store: bool = False,
    replay: Callable[[list[Any]], list[Any]] | None = None,
    plan: Callable[[Any, Any], Any] | None = None,
    network: bool = False,
    serves: bool = False,
    affinity: Callable[[Any], list[str]] | None = None,
    driver: bool = False,
    digest: Callable[[Any], Any] | None = None,
) -> Callable[[Operator], StageKind]:
    """Decorator: the generator becomes a StageKind named `name`; each
    keyword sets the StageKind field of its name (what each means is said
    there).

    With `per_item=True` the function is a coroutine `run(item, params, ctx)`
    returning the output item (or None: nothing passed on), and its params
    must derive from ConcurrentParams: the engine maps it over the input with
    at most `params.in_flight` items in flight (its `concurrency`, unless
    the kind derives it), never unbounded."""
    if per_item and not issubclass(params, ConcurrentParams):
        raise TypeError(f"per-item stage '{name}' needs params derived from ConcurrentParams")
    accepted = None if consumes is None else consumes if isinstance(consumes, tuple) else (consumes,)
    for kind in [*(accepted or ()), *([produces] if isinstance(produces, type) else [])]:
        if not isinstance(kind, type):
            raise TypeError(f"stage '{name}': item kinds are classes, got {kind!r}")

    def register(run: Operator) -> StageKind:
        doc = (run.__doc__ or "").strip()
        return StageKind(
            name, params, run, accepted, produces, fan_in, per_item, spans, dict(outputs or {}), check, doc,
            whole=whole, store=store, replay=replay, plan=plan, network=network, serves=serves,
            affinity=affinity, driver=driver, digest=digest,
        )

    return register


class Registry:
    """Stage kinds by name. A kind added by `add_lazy` is a function that
    loads it; it is called once, on the kind's first lookup, and the kind
    takes its place in `_kinds` (the two dicts never share a name)."""

    def __init__(self, kinds: list[StageKind] | None = None) -> None:
        self._kinds: dict[str, StageKind] = {}
        self._loaders: dict[str, Callable[[], StageKind]] = {}
        for kind in kinds or []:
            self.add(kind)

    def add(self, kind: StageKind) -> None:
        self._claim(kind.name)
        self._kinds[kind.name] = kind

    def add_lazy(self, name: str, load: Callable[[], StageKind]) -> None:
        """Register the kind `name` that `load()` returns when first looked up."""
        self._claim(name)
        self._loaders[name] = load

    def _claim(self, name: str) -> None:
        if name in self:
            raise ValueError(f"stage kind '{name}' is registered twice")

    def __contains__(self, name: object) -> bool:
        return name in self._kinds or name in self._loaders

    def __getitem__(self, name: str) -> StageKind:
        kind = self._kinds.get(name)
        if kind is None:
            kind = self._loaders[name]()
            del self._loaders[name]
            self._kinds[name] = kind
        return kind

    def names(self) -> list[str]:
        return sorted([*self._kinds, *self._loaders])

    def suggest(self, name: str) -> str | None:
        close = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.6)
        return close[0] if close else None


def default_registry(*, plugins: bool = True) -> Registry:
    """The stage kinds of the `flow.stages` entry points: flow's own, plus,
    unless `plugins` is off, those of other installed distributions. Each
    is loaded (its module imported) when first looked up."""
    registry = Registry()
    for point in sorted(entry_points(ENTRY_POINT_GROUP), key=lambda p: p.name):
        if plugins or point.distribution == BUILTIN_DISTRIBUTION:
            registry.add_lazy(point.name, functools.partial(_load, point))
    return registry


def _load(point: EntryPoint) -> StageKind:
    kind = point.load()
    if not isinstance(kind, StageKind):
        raise TypeError(f"entry point {point.name!r} ({point.value}) is not a flow StageKind")
    if kind.name != point.name:
        raise TypeError(f"entry point {point.name!r} ({point.value}) registers a kind named {kind.name!r}")
    if point.distribution != BUILTIN_DISTRIBUTION:
        kind = dataclasses.replace(kind, origin=point.distribution)
    return kind


def describe_params(params: type[Params]) -> list[tuple[str, str, Any, str]]:
    """(name, type, default or NODEFAULT, one-line doc) of each field, for
    `flow stages NAME`. The doc is the field's trailing `# comment` in the
    params class (or a base class): one place for the code and the help."""
    info = msgspec.inspect.type_info(params)
    docs = _field_comments(params)
    out = []
    for f in info.fields:  # type: ignore[attr-defined]
        default = f.default
        if default is msgspec.NODEFAULT and f.default_factory is not msgspec.NODEFAULT:
            default = f.default_factory()
        out.append((f.encode_name, _type_name(f.type), default, docs.get(f.name, "")))
    return out


_FIELD_COMMENT = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+?)\s*$")


def _field_comments(params: type) -> dict[str, str]:
    docs: dict[str, str] = {}
    for cls in reversed(params.__mro__):  # subclasses' comments win
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):
            continue
        for line in source.splitlines():
            match = _FIELD_COMMENT.match(line)
            if match:
                docs[match[1]] = match[2]
    return docs


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
    if isinstance(t, msgspec.inspect.CustomType):
        return t.cls.__name__.lower()  # duration, rate
    return type(t).__name__.removesuffix("Type").lower()
