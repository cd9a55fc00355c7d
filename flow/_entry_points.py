"""The entry points of one group, read straight from the installed
distributions' metadata directories.

importlib.metadata finds the same ones, but importing it (email, zipfile,
csv) and parsing each distribution's whole METADATA (README included) for
its name took 40 ms of `flow validate`'s 220 here. This reads what it
reads, the way it reads it: the `*.dist-info` and `*.egg-info` directories
directly in each directory of `sys.path`, the first distribution of a
(normalized) name winning, and from each its `entry_points.txt`; the
`Name:` header of a distribution's metadata is read only when it has
entry points in the group. A `sys.path` entry that is not a directory (a
zip file, an egg) is left to importlib.metadata, which then answers for all.
tests/flow/test_plugins.py checks that both agree.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Iterable
from typing import Any, NamedTuple


class EntryPoint(NamedTuple):
    name: str
    value: str  # "module:attribute"
    distribution: str  # the distribution's Name, e.g. "flow-example-stages"

    def load(self) -> Any:
        """Import the module and get the attribute the value names."""
        module, _, attributes = self.value.split("[", 1)[0].partition(":")  # "[extras]" do not matter here
        found = importlib.import_module(module.strip())
        for attribute in filter(None, attributes.strip().split(".")):
            found = getattr(found, attribute)
        return found


def entry_points(group: str, paths: Iterable[str] | None = None) -> list[EntryPoint]:
    """The entry points of `group` of every distribution found on `paths`
    (default sys.path), in path order."""
    paths = list(sys.path if paths is None else paths)
    if any(os.path.isfile(path) or path.lower().endswith(".egg") for path in paths):
        return _by_importlib(group, paths)
    found, seen = [], set()
    for path in paths:
        for info in _metadata_directories(path or "."):
            name = _normalize(os.path.basename(info).rpartition(".")[0].partition("-")[0])
            if name in seen:
                continue
            seen.add(name)
            points = _group(_read(os.path.join(info, "entry_points.txt")), group)
            if points:
                distribution = _metadata_name(info) or name
                found += [EntryPoint(n, v, distribution) for n, v in points]
    return found


def _metadata_directories(path: str) -> list[str]:
    try:
        children = os.listdir(path)
    except OSError:
        return []
    return [os.path.join(path, c) for c in children if c.lower().endswith((".dist-info", ".egg-info"))]


def _normalize(name: str) -> str:
    """PEP 503 normalization, dashes as underscores (importlib.metadata's key)."""
    return re.sub(r"[-_.]+", "-", name).lower().replace("-", "_")


def _read(file: str) -> str:
    try:
        with open(file, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def _group(text: str, group: str) -> list[tuple[str, str]]:
    """`name = value` lines of the `[group]` section of an entry_points.txt."""
    points, section = [], None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]")
        elif section == group and "=" in line:
            name, _, value = line.partition("=")
            points.append((name.strip(), value.strip()))
    return points


def _metadata_name(info: str) -> str | None:
    """The `Name:` header of METADATA (or an egg-info's PKG-INFO); the
    headers end at the first blank line."""
    for file in ("METADATA", "PKG-INFO"):
        try:
            with open(os.path.join(info, file), encoding="utf-8") as f:
                for line in f:
                    if not line.strip():
                        break
                    if line.startswith("Name:"):
                        return line[len("Name:") :].strip()
        except OSError:
            continue
    return None


def _by_importlib(group: str, paths: list[str]) -> list[EntryPoint]:
    from importlib.metadata import distributions

    found, seen = [], set()
    for dist in distributions(path=paths):
        name = _normalize(dist.name or "")
        if name in seen:
            continue
        seen.add(name)
        found += [EntryPoint(p.name, p.value, dist.name) for p in dist.entry_points if p.group == group]
    return found
