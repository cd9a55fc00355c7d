"""Reading the `mocks:` block of a graph.yaml into ServerSpecs, errors located.

Parsing, decoding and locating are flow's own (`flow._yaml`, `flow.problems`),
so `python -m mocks --config graph.yaml` and `flow validate graph.yaml` point
at the same line and column with the same words:
`graph.yaml:7:24: unknown key 'error_rat'; hint: did you mean 'error_rate'?`
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flow._yaml import YAMLError, load
from flow.problems import Problem, decode, format_problem

from ._spec import ServerSpec


class ConfigError(Exception):
    """A located, one-line explanation of what is wrong in a config file."""


def load_mocks(path: str | Path, *, block: str = "mocks") -> dict[str, ServerSpec]:
    """The servers declared under `block:` in a YAML file, by name."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        data, locator = load(text)
    except YAMLError as err:
        raise ConfigError(f"{path}:{err.line}:{err.column}: {err.message}") from None
    if not isinstance(data, dict) or block not in data:
        raise ConfigError(
            f"{path}: no '{block}:' block; hint: declare servers as "
            f"'{block}: {{shop_a: {{style: dummyjson}}}}'"
        )
    servers: Any = data[block]
    if not isinstance(servers, dict) or not servers:
        problem = Problem(
            (block,), f"'{block}' must map server names to settings, e.g. 'shop_a: {{style: dummyjson}}'"
        )
        raise ConfigError(format_problem(str(path), locator, problem))
    specs: dict[str, ServerSpec] = {}
    problems: list[Problem] = []
    for name, fields in servers.items():
        # Paths start at the file's root, so the locator finds the value.
        spec = decode(fields, ServerSpec, (block, str(name)), problems)
        if problems:  # the contract is one line: the first problem found
            raise ConfigError(format_problem(str(path), locator, problems[0]))
        specs[str(name)] = spec
    return specs
