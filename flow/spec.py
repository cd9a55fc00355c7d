"""graph.yaml -> a validated `GraphSpec`, every error located in the file.

Loading runs in phases, each reporting problems as `file:LINE:COL: message`
(with a hint where one helps) through `SpecError`:

    1. YAML syntax and duplicate keys                 (flow._yaml)
    2. `${VAR}` / `${VAR:-default}` from the environment, then overrides:
       `FLOW__RUN__DEADLINE=30s` variables, then `--set run.deadline=30s`
       (command line > environment > file)
    3. the document's shape, decoded by msgspec section by section so that
       every error carries its full path (`nodes.shop_a.buffer`)
    4. each pipe entry against its stage kind's params struct
    5. the graph itself (flow.graph): names, inputs, cycles, item kinds

Secrets stay secret: values taken from the environment are never echoed;
messages quote the `${VAR}` text of the file instead.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

import msgspec

from ._interpolate import interpolate, overrides_from_env, references, scalar, scrub, set_path
from ._yaml import Locator, Path, YAMLError, load
from .expect import SourceExpectation, TestsSpec
from .problems import OVERRIDE, Problem, SpecError, decode, format_problem
from .registry import Params, Registry, StageKind
from .units import Duration

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class Base(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class RunSpec(Base):
    deadline: Duration = Duration.default(60)  # the whole run, then drain and stop
    grace: Duration = Duration.default(5)  # how long draining may take after a stop
    out: str = "out"  # directory for outputs and the report
    buffer: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 8  # default edge capacity
    on_loss: Literal["fail", "warn"] = "fail"  # exit 1 when anything was lost, or only say so
    state: str = "state.db"  # the runs' state file (SQLite), relative to out: did the last run finish?

    def __post_init__(self) -> None:
        if self.deadline <= 0:
            raise ValueError("deadline: must be longer than 0s")


class NodeSpec(Base, kw_only=True):
    pipe: Annotated[list[str | dict[str, Any]], msgspec.Meta(min_length=1)]
    inputs: str | list[str] = msgspec.field(default_factory=list, name="from")
    buffer: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None

    @property
    def sources(self) -> list[str]:
        return [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)


class TelemetrySpec(Base):
    """`telemetry:` in graph.yaml; unset fields follow the OTEL_* variables."""

    traces: Literal["otlp", "console", "none"] | None = None
    metrics: Literal["otlp", "console", "none"] | None = None
    protocol: Literal["http/protobuf", "grpc"] | None = None
    endpoint: str | None = None  # e.g. http://localhost:4318 (gRPC: http://localhost:4317)
    # A later stage's span per batch: only when the stage records something on it (OTLP), or always.
    stage_spans: Literal["eventful", "all"] | None = None


class ClusterSpec(Base):
    """`cluster:`: run the graph's sources over shards (flow run --cluster beats it)."""

    shards: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2  # Ray actors, each running flow's runtime
    # local: Ray started on this machine for the run; ray://HOST:PORT: a cluster that runs
    address: str = "local"

    def __post_init__(self) -> None:
        if self.address != "local" and not self.address.startswith("ray://"):
            raise ValueError(f"address: local or ray://HOST:PORT, not {self.address!r}")

    @property
    def target(self) -> str:
        return f"local:{self.shards}" if self.address == "local" else self.address


class GraphSpec(Base):
    version: Literal[1]
    run: RunSpec = msgspec.field(default_factory=RunSpec)
    mocks: dict[str, Any] = {}
    telemetry: TelemetrySpec = TelemetrySpec()
    nodes: dict[str, Any] = {}
    tests: TestsSpec | None = None  # what `flow test` checks (flow.expect)
    cluster: ClusterSpec | None = None  # where it runs: shards on Ray (flow.cluster)


@dataclass(frozen=True)
class StageSpec:
    kind: StageKind
    params: Params
    path: Path  # of the pipe entry, for messages


@dataclass(frozen=True)
class Node:
    name: str
    inputs: list[str]
    stages: list[StageSpec]
    buffer: int  # capacity of the node's input buffer
    path: Path
    has_buffer: bool = False  # set explicitly in the file


@dataclass
class Spec:
    """A decoded graph file: its settings, mocks, and nodes with typed stages."""

    file: str
    run: RunSpec
    mocks: dict[str, Any]  # raw settings; the CLI decodes them (the engine runs no servers)
    telemetry: dict[str, Any]
    nodes: dict[str, Node]
    locator: Locator
    warnings: list[str] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)  # env values -> ${NAME}, scrubbed from outputs
    tests: TestsSpec | None = None  # the `tests:` block, for `flow test`
    cluster: ClusterSpec | None = None  # the `cluster:` block, for `flow run`

    def where(self, problem: Problem) -> str:
        return scrub(format_problem(self.file, self.locator, problem), self.secrets)


def _stages(
    node_name: str, raw: list[Any], path: Path, registry: Registry, problems: list[Problem]
) -> list[StageSpec]:
    out = []
    for i, entry in enumerate(raw):
        entry_path = (*path, i)
        if isinstance(entry, str):
            name, params = entry, {}
        elif isinstance(entry, dict) and len(entry) == 1:
            [(name, params)] = entry.items()
            params = {} if params is None else params
        else:
            problems.append(
                Problem(
                    entry_path,
                    "a pipe entry is a stage name or {stage: {params}}",
                    "write '- merge' or '- dedupe: {key: id}'",
                )
            )
            continue
        if name not in registry:
            close = registry.suggest(str(name))
            hint = f"did you mean '{close}'?" if close else f"stages are: {', '.join(registry.names())}"
            problems.append(
                Problem(
                    entry_path if isinstance(entry, str) else (*entry_path, name),
                    f"unknown stage '{name}'",
                    hint,
                    key=not isinstance(entry, str),
                )
            )
            continue
        kind = registry[name]
        decoded = decode(params, kind.params, (*entry_path, name), problems)
        if decoded is not None:
            out.append(StageSpec(kind, decoded, entry_path))
    return out


def load_spec(
    file: str | os.PathLike[str],
    registry: Registry,
    *,
    env: Mapping[str, str] | None = None,
    sets: Sequence[str] = (),
    mocks_type: type[Any] | None = None,
    refs: Mapping[str, str] | None = None,
) -> Spec:
    """Decode and check a graph file (phases 1-4); raise SpecError."""
    file = str(file)
    try:
        text = FilePath(file).read_text(encoding="utf-8")
    except OSError as err:
        raise SpecError([f"{file}: cannot read: {err.strerror or err}"]) from None
    except UnicodeDecodeError as err:
        raise SpecError([f"{file}: not UTF-8 text (byte {err.start}); a graph file is YAML"]) from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise SpecError([f"{file}:{line}: a NUL byte; a graph file is YAML text"])
    return parse_spec(text, registry, file=file, env=env, sets=sets, mocks_type=mocks_type, refs=refs)


def parse_spec(
    text: str,
    registry: Registry,
    *,
    file: str = "graph.yaml",
    env: Mapping[str, str] | None = None,
    sets: Sequence[str] = (),
    mocks_type: type[Any] | None = None,
    refs: Mapping[str, str] | None = None,
) -> Spec:
    """Decode a graph file's text. `mocks_type`: decode each `mocks:` entry
    into it (else they stay raw); `refs`: the URL of each mock server, filled
    into `${mocks.NAME.url}` (else those stay as written, for validation)."""
    env = os.environ if env is None else env
    try:
        data, locator = load(text)
    except YAMLError as err:
        raise SpecError([f"{file}:{err.line}:{err.column}: {err.message}"]) from None
    problems: list[Problem] = []

    def fail() -> SpecError:
        # A value shared through a YAML anchor fails once per use: report it once.
        located = (_at_override(p, overridden) for p in problems)
        lines = (scrub(format_problem(file, locator, p), secrets) for p in located)
        return SpecError(list(dict.fromkeys(lines)))

    overridden: dict[tuple[str, ...], str] = {}  # path -> the override that set it
    secrets: dict[str, str] = {}  # values taken from the environment -> ${NAME}
    data = _prepare(data, env, sets, refs, problems, overridden, secrets)
    _check_test_sources(data, problems)
    if problems:
        raise fail()
    top = decode(data, GraphSpec, (), problems, unknown_hint="top-level keys starting with 'x-' are free for "
                 "YAML anchors")  # fmt: skip
    if top is None:
        for i, problem in enumerate(problems):
            if problem.path == ("version",):
                problems[i] = dataclasses.replace(problem, hint="flow reads graph files of version 1")
        raise fail()
    mocks = {}
    for name, fields in top.mocks.items():
        raw = fields if fields is not None else {}
        server = raw if mocks_type is None else decode(raw, mocks_type, ("mocks", name), problems)
        if server is not None:
            mocks[name] = server
    nodes = _nodes(top, registry, problems)
    if not top.nodes:
        problems.append(Problem((), "the graph has no nodes", "add 'nodes:' with a source and a sink, as in "
                                "the graph.yaml that ships with flow"))  # fmt: skip
    for name, value in references(data):
        if name not in top.mocks:
            problems.append(Problem(value, f"'${{mocks.{name}.url}}' names no server of the mocks: block"))
    if problems:
        raise fail()
    telemetry = {k: v for k, v in msgspec.structs.asdict(top.telemetry).items() if v is not None}
    return Spec(file, top.run, mocks, telemetry, nodes, locator, secrets=secrets, tests=top.tests,
                cluster=top.cluster)  # fmt: skip


def _check_test_sources(data: Any, problems: list[Problem]) -> None:
    """`tests.sources` entry by entry: msgspec names no key of a dict in its
    errors, so a whole-block decode could not say which source is wrong."""
    tests = data.get("tests") if isinstance(data, dict) else None
    sources = tests.get("sources") if isinstance(tests, dict) else None
    if isinstance(sources, dict):
        for name, expected in sources.items():
            decode(expected, SourceExpectation, ("tests", "sources", name), problems)


def _at_override(problem: Problem, overridden: dict[tuple[str, ...], str]) -> Problem:
    """A problem with a value an override set points at that override."""
    steps = tuple(str(step) for step in problem.path)
    for length in range(len(steps), 0, -1):
        label = overridden.get(steps[:length])
        if label is not None:
            return dataclasses.replace(problem, path=(OVERRIDE, label), key=False)
    return problem


def _prepare(
    data: Any,
    env: Mapping[str, str],
    sets: Sequence[str],
    refs: Mapping[str, str] | None,
    problems: list[Problem],
    overridden: dict[tuple[str, ...], str],
    secrets: dict[str, str],
) -> Any:
    """Phase 2: `${...}` filled in, overrides applied (each remembered in
    `overridden`, to point messages at it), `x-` keys dropped."""
    if not isinstance(data, dict):
        problems.append(
            Problem(
                (),
                "a graph file is a mapping with 'version: 1' and 'nodes:'",
                "start from the graph.yaml that ships with flow",
            )
        )
        return data
    data = interpolate(data, (), env, problems, refs, secrets)
    for label, assignment in [*overrides_from_env(env), *((f"--set {s}", s) for s in sets)]:
        dotted, sep, raw = assignment.partition("=")
        if not sep or not dotted:
            problems.append(Problem((OVERRIDE, label), "expected PATH=VALUE, e.g. run.deadline=30s"))
            continue
        try:
            set_path(data, dotted, scalar(raw))
        except (KeyError, IndexError, TypeError):
            problems.append(Problem((OVERRIDE, label), f"no place for '{dotted}' in the graph"))
        else:
            overridden[tuple(dotted.split("."))] = label
    # Top-level keys starting with "x-" are free for YAML anchors, as in
    # compose files: `x-shop: &shop {...}` then `shop_a: *shop`.
    return {k: v for k, v in data.items() if not str(k).startswith("x-")}


def _nodes(top: GraphSpec, registry: Registry, problems: list[Problem]) -> dict[str, Node]:
    nodes = {}
    for name, fields in top.nodes.items():
        path: Path = ("nodes", name)
        if not NAME.match(str(name)):
            problems.append(
                Problem(
                    path,
                    f"node name '{name}' is not an identifier",
                    "use letters, digits, '_' and '-', starting with a letter",
                    key=True,
                )
            )
            continue
        node = decode(fields, NodeSpec, path, problems)
        if node is None:
            continue
        stages = _stages(name, node.pipe, (*path, "pipe"), registry, problems)
        if len(stages) == len(node.pipe):
            buffer = node.buffer or top.run.buffer
            nodes[name] = Node(name, node.sources, stages, buffer, path, node.buffer is not None)
    return nodes
