"""Reading the `mocks:` block of a graph.yaml into ServerSpecs, errors located.

An error names the file, line and column of the offending value
(`graph.yaml:7:24: ...`): msgspec reports the path of the value it rejected
(`$.shop_b.error_rate`) and we walk the `yaml.compose()` node tree along it.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import msgspec
import yaml

from ._spec import STYLES, ServerSpec


class ConfigError(Exception):
    """A located, one-line explanation of what is wrong in a config file."""


_AT = re.compile(r" - at `\$((?:\.[^.\[`]+|\[\d+\])*)`$")
_UNKNOWN = re.compile(r"Object contains unknown field `([^`]*)`")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def _locate(root: yaml.Node | None, steps: list[str | int]) -> yaml.Node | None:
    node = root
    for step in steps:
        if isinstance(node, yaml.MappingNode) and isinstance(step, str):
            node = next((v for k, v in node.value if getattr(k, "value", None) == step), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
        else:
            return node
        if node is None:
            return None
    return node


def _where(path: Path, node: yaml.Node | None) -> str:
    if node is None:
        return f"{path}"
    return f"{path}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"


def load_mocks(path: str | Path, *, block: str = "mocks") -> dict[str, ServerSpec]:
    """The servers declared under `block:` in a YAML file, by name."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else f"{path}"
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if not isinstance(data, dict) or block not in data:
        raise ConfigError(
            f"{path}: no '{block}:' block; hint: declare servers as "
            f"'{block}: {{shop_a: {{style: dummyjson}}}}'"
        )
    servers: Any = data[block]
    block_node = _locate(root, [block])
    if not isinstance(servers, dict) or not servers:
        raise ConfigError(
            f"{_where(path, block_node)}: '{block}' must map server names "
            "to settings, e.g. 'shop_a: {style: dummyjson}'"
        )
    specs = {}
    for name, fields in servers.items():
        server_node = _locate(block_node, [str(name)])
        try:
            specs[str(name)] = msgspec.convert(fields, ServerSpec)
        except msgspec.ValidationError as err:
            raise ConfigError(_explain(path, f"{block}.{name}", server_node, str(err))) from None
    return specs


def _explain(path: Path, prefix: str, root: yaml.Node | None, message: str) -> str:
    """`file:line:col: dotted.path: message` for a msgspec error under `root`."""
    match = _AT.search(message)
    steps: list[str | int] = []
    if match:
        message = message[: match.start()]
        steps = [name if name else int(index) for name, index in _STEP.findall(match[1])]
    node = _locate(root, steps)
    unknown = _UNKNOWN.match(message)
    if unknown and isinstance(node, yaml.MappingNode):
        field = unknown[1]
        node = next((k for k, _ in node.value if getattr(k, "value", None) == field), node)
        close = difflib.get_close_matches(field, ServerSpec.__struct_fields__, n=1)
        hint = (
            f"did you mean '{close[0]}'?"
            if close
            else (f"options are: {', '.join(ServerSpec.__struct_fields__)}")
        )
        message = f"unknown option '{field}'; {hint}"
    elif message.startswith("Invalid enum value"):
        message += f"; choose one of: {', '.join(STYLES)}"
    dotted = ".".join([prefix, *map(str, steps)])
    return f"{_where(path, node)}: {dotted}: {message}"
