"""Problems found in a config file, and how they are found and printed.

Each problem keeps the data path of the offending value; `format_problem`
turns it into `FILE:LINE:COL: message; hint: ...` through the YAML locator.
`decode(value, cls, path, problems)` is the one msgspec decode of flow's
config files (graph.yaml and the mocks' settings alike): a rejected value
becomes a Problem at its full path (`nodes.shop_a.pipe.2.fetch.timeout`),
with a did-you-mean for unknown keys and the choices of a Literal.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from ._yaml import Locator, Path
from .units import dec_hook


@dataclass(frozen=True)
class Problem:
    path: Path
    message: str
    hint: str = ""
    key: bool = False  # point at the key rather than the value
    warning: bool = False


class SpecError(Exception):
    """Located problems with a config file; `str()` is one line per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def format_problem(file: str, locator: Locator, problem: Problem) -> str:
    if problem.path and problem.path[0] == OVERRIDE:
        place = str(problem.path[1])  # `--set run.deadline=5m` or `FLOW__RUN__DEADLINE`
    else:
        at = locator.where(problem.path, key=problem.key) or (1, 1)
        place = f"{file}:{at[0]}:{at[1]}"
    text = f"{place}: {problem.message}"
    if problem.hint:
        text += f"; hint: {problem.hint}"
    return f"{place}: warning: {text[len(place) + 2 :]}" if problem.warning else text


OVERRIDE = "--set"  # a Problem path (OVERRIDE, label): the value came from an override


_AT = re.compile(r" - at `\$((?:\.[^.\[`]+|\[\d+\])*)`$")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_NAMED = re.compile(r"^([a-z_]+): (.*)$", re.S)
_MISSING = re.compile(r"^Object missing required field `([^`]*)`")
_UNKNOWN = re.compile(r"^Object contains unknown field `([^`]*)`")


def decode(value: Any, cls: type[Any], path: Path, problems: list[Problem], *, unknown_hint: str = "") -> Any:
    """`value` as a `cls` (lax: "4" fills an int), or None with a Problem added.
    `unknown_hint` is appended to the hint of an unknown top-level key."""
    try:
        return msgspec.convert(value, cls, strict=False, dec_hook=dec_hook)
    except msgspec.ValidationError as err:
        problems.append(_problem(str(err), value, cls, path, unknown_hint))
        return None


def _problem(message: str, value: Any, cls: type[Any], path: Path, unknown_hint: str) -> Problem:
    match = _AT.search(message)
    steps: list[str | int] = []
    if match:
        message = message[: match.start()]
        steps = [name if name else int(index) for name, index in _STEP.findall(match[1])]
    full = (*path, *steps)
    unknown = _UNKNOWN.match(message)
    missing = _MISSING.match(message)
    target = _type_at(msgspec.inspect.type_info(cls), steps)
    if unknown:
        fields = [f.encode_name for f in getattr(target, "fields", ())]
        close = difflib.get_close_matches(unknown[1], fields, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"expected one of: {', '.join(fields)}"
        if not close and not steps and unknown_hint:
            hint += f" ({unknown_hint})"
        return Problem((*full, unknown[1]), f"unknown key '{unknown[1]}'", hint, key=True)
    if missing:
        return Problem(full, f"missing required key '{missing[1]}'")
    # Cross-field checks (`__post_init__`) name their field first: point at
    # that field's value when it is there.
    named = _NAMED.match(message)
    if named and isinstance(_at(value, steps), dict) and named[1] in _at(value, steps):
        full = (*full, named[1])
    hint = ""
    if isinstance(target, msgspec.inspect.LiteralType):
        hint = "choose one of: " + ", ".join(map(str, target.values))
    return Problem(full, message[0].lower() + message[1:], hint)


def _type_at(t: Any, steps: Sequence[str | int]) -> Any:
    """The msgspec type at a path inside `t` (for hints), or None."""
    for step in steps:
        while isinstance(t, msgspec.inspect.UnionType):
            t = next((x for x in t.types if not isinstance(x, msgspec.inspect.NoneType)), None)
        if isinstance(t, msgspec.inspect.StructType):
            t = next((f.type for f in t.fields if f.encode_name == step), None)
        elif isinstance(t, msgspec.inspect.DictType):
            t = t.value_type
        elif isinstance(t, msgspec.inspect.ListType):
            t = t.item_type
        else:
            return None
    while isinstance(t, msgspec.inspect.UnionType) and len(t.types) == 2:
        t = next((x for x in t.types if not isinstance(x, msgspec.inspect.NoneType)), t)
    return t


def _at(value: Any, steps: Sequence[str | int]) -> Any:
    for step in steps:
        try:
            value = value[step]
        except (KeyError, IndexError, TypeError):
            return None
    return value
