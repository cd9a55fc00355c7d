"""YAML in, plain data out, with every value still locatable by its path.

`load(text)` returns the data (dicts, lists, scalars; anchors and `<<` merges
resolved) and a `Locator` that turns a path such as
`("nodes", "shop_a", "pipe", 2)` into the node's line and column, so that an
error found long after parsing still points into the file. Duplicate keys,
which PyYAML silently resolves to the last one, are an error here.

Documents are parsed by libyaml (PyYAML's C loader, several times faster);
one that libyaml rejects is parsed again by PyYAML's Python loader, whose
error messages are the ones flow shows.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

Path = tuple[str | int, ...]


class _LazyPattern:
    """A regular expression compiled on its first use."""

    __slots__ = ("_args", "_compiled")

    def __init__(self, *args: Any) -> None:
        self._args, self._compiled = args, None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy and pickle protocols: see __reduce__
            raise AttributeError(name)
        if self._compiled is None:
            self._compiled = re.compile(*self._args)
        return getattr(self._compiled, name)

    def __reduce__(self) -> tuple[Any, ...]:
        return re.compile, self._args


@contextlib.contextmanager
def _compiled_when_used(package: str) -> Iterator[None]:
    """Within: the regular expressions that `package`'s own modules compile
    are compiled when first used. Any other caller (another thread) gets
    its pattern compiled as usual."""
    compile_now: Callable[..., Any] = re.compile

    def compile_lazily(*args: Any, **kwargs: Any) -> Any:
        if sys._getframe(1).f_globals.get("__name__", "").startswith(package) and not kwargs:
            return _LazyPattern(*args)
        return compile_now(*args, **kwargs)

    re.compile = compile_lazily
    try:
        yield
    finally:
        re.compile = compile_now


# PyYAML compiles ten regular expressions as it is imported (its Python
# reader's non-printable class, the constructor's timestamp, the resolver's
# implicit types): 60 million instructions, two thirds of its import and a
# quarter of what flow adds to a run's start-up; the C loader uses only a
# few of the resolver's.
with _compiled_when_used("yaml."):
    import yaml


class YAMLError(Exception):
    """A syntax or structure error, with its 1-based line and column."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.message, self.line, self.column = message, line, column


class _UniqueKeys(yaml.constructor.SafeConstructor):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                first = seen[key].start_mark.line + 1
                raise YAMLError(
                    f"duplicate key '{key}' (first defined on line {first})",
                    key_node.start_mark.line + 1,
                    key_node.start_mark.column + 1,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


class _Loader(_UniqueKeys, yaml.SafeLoader):
    pass


class _FastLoader(_UniqueKeys, getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    pass


class Locator:
    """Line and column of the YAML node at a data path."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.root = root

    def node(self, path: Sequence[str | int]) -> yaml.Node | None:
        """The deepest node along `path` (the parent when the tail is missing)."""
        node = self.root
        for step in path:
            child = _child(node, step)
            if child is None:
                return node
            node = child
        return node

    def key(self, path: Sequence[str | int]) -> yaml.Node | None:
        """The key node of the last step of `path` (for 'unknown field' errors)."""
        parent = self.node(path[:-1])
        if isinstance(parent, yaml.MappingNode):
            for key_node, _ in _pairs(parent):
                if getattr(key_node, "value", None) == path[-1]:
                    return key_node
        return self.node(path)

    def where(self, path: Sequence[str | int], *, key: bool = False) -> tuple[int, int] | None:
        node = self.key(path) if key else self.node(path)
        if node is None:
            return None
        return node.start_mark.line + 1, node.start_mark.column + 1


def _pairs(node: yaml.MappingNode) -> list[tuple[yaml.Node, yaml.Node]]:
    """Explicit pairs first, then those merged in by `<<` (explicit keys win)."""
    explicit, merged = [], []
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in sources:
                if isinstance(source, yaml.MappingNode):
                    merged.extend(_pairs(source))
        else:
            explicit.append((key_node, value_node))
    return explicit + merged


def _child(node: yaml.Node | None, step: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in _pairs(node):
            if getattr(key_node, "value", None) == str(step):
                return value_node
    elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
        return node.value[step]
    return None


def load(text: str) -> tuple[Any, Locator]:
    """Parse one YAML document; raise YAMLError with a location on bad input."""
    try:
        return _parse(text, _FastLoader)
    except yaml.YAMLError:
        pass  # parsed again below for PyYAML's message
    try:
        return _parse(text, _Loader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        problem = err.problem or err.context or "invalid YAML"
        if err.context and err.problem:
            problem = f"{err.problem} ({err.context})"
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YAMLError(f"invalid YAML: {problem}", line, column) from None
    except yaml.YAMLError as err:  # pragma: no cover - every PyYAML error is marked
        raise YAMLError(f"invalid YAML: {err}", 1, 1) from None


def _parse(text: str, loader_class: type[_Loader] | type[_FastLoader]) -> tuple[Any, Locator]:
    # Two passes: constructing the data flattens `<<` merges in the node tree
    # in place, and the locator needs the tree as written.
    loader = loader_class(text)
    try:
        root = yaml.compose(text, Loader=loader_class)
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return data, Locator(root)
