"""The JSON Schema of graph.yaml, for editors (yaml-language-server).

msgspec derives the schema of each struct; the parts the structs keep open
(`nodes`, `mocks`, pipe entries) are filled in from NodeSpec, ServerSpec and
every registered stage kind's params."""

from __future__ import annotations

from typing import Any

import msgspec

from .registry import Registry, default_registry
from .spec import GraphSpec, NodeSpec
from .units import schema_hook


def graph_schema(registry: Registry | None = None, mocks_type: type | None = None) -> dict[str, Any]:
    """The schema of graph.yaml; `mocks_type`: what each `mocks:` entry is
    (the CLI passes the mocks' ServerSpec; the engine knows no servers)."""
    registry = registry or default_registry()
    kinds = [registry[name] for name in registry.names()]
    types = [GraphSpec, NodeSpec, mocks_type or dict[str, Any], *(kind.params for kind in kinds)]
    (graph, node, server, *params), components = msgspec.json.schema_components(
        types, schema_hook=schema_hook
    )
    defs = components
    entry = {
        "anyOf": [
            {"enum": [kind.name for kind in kinds]},
            *(
                {
                    "type": "object",
                    "properties": {kind.name: {"anyOf": [ref, {"type": "null"}]}},
                    "required": [kind.name],
                    "additionalProperties": False,
                    "description": kind.doc.splitlines()[0] if kind.doc else kind.name,
                }
                for kind, ref in zip(kinds, params, strict=True)
            ),
        ]
    }
    defs["NodeSpec"]["properties"]["pipe"] = {"type": "array", "minItems": 1, "items": entry}
    defs["GraphSpec"]["properties"]["nodes"] = {"type": "object", "additionalProperties": node}
    defs["GraphSpec"]["properties"]["mocks"] = {"type": "object", "additionalProperties": server}
    defs["GraphSpec"]["patternProperties"] = {"^x-": {}}  # free for YAML anchors, as in compose files
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "flow graph.yaml",
        **graph,
        "$defs": defs,
    }
