"""The JSON Schema of graph.yaml, for editors (yaml-language-server).

msgspec derives the schema of each struct; the parts the structs keep open
(`nodes`, `mocks`, pipe entries) are filled in from NodeSpec, ServerSpec and
every registered stage kind's params."""

from __future__ import annotations

from typing import Any

import msgspec

from mocks import ServerSpec

from .registry import Registry, default_registry
from .spec import GraphSpec, NodeSpec


def graph_schema(registry: Registry | None = None) -> dict[str, Any]:
    registry = registry or default_registry()
    kinds = [registry[name] for name in registry.names()]
    types = [GraphSpec, NodeSpec, ServerSpec, *(kind.params for kind in kinds)]
    (graph, node, server, *params), components = msgspec.json.schema_components(types)
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
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "flow graph.yaml",
        **graph,
        "$defs": defs,
    }
