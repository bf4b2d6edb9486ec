"""Extract one component of OpenAI's OpenAPI spec, with everything it references, as a JSON Schema.

    python3 tests/data/extract_openapi_schema.py SPEC.yaml COMPONENT OUT.json SNAPSHOT-DATE

The closure (the component and every component it references, recursively) is copied unchanged
except that each '#/components/schemas/X' reference becomes '#/$defs/X', so that a Draft 2020-12
validator reads it on its own. OpenAPI-only keywords (nullable, discriminator, x-*) stay as they
are; JSON Schema validators ignore them. The tests load the output file, never the spec.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

PREFIX = "#/components/schemas/"


def references(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"][len(PREFIX):]} if isinstance(node.get("$ref"), str) and node["$ref"].startswith(PREFIX) else set()
        for value in node.values():
            found |= references(value)
        return found
    if isinstance(node, list):
        return set().union(*map(references, node)) if node else set()
    return set()


def rewritten(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: ("#/$defs/" + value[len(PREFIX):] if key == "$ref" and isinstance(value, str)
                      and value.startswith(PREFIX) else rewritten(value)) for key, value in node.items()}
    if isinstance(node, list):
        return [rewritten(value) for value in node]
    return node


def closure(schemas: dict[str, Any], root: str) -> dict[str, Any]:
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(references(schemas[name]) - seen)
    return {name: rewritten(schemas[name]) for name in sorted(seen)}


def main(spec_path: str, component: str, out_path: str, snapshot: str) -> None:
    spec = yaml.safe_load(Path(spec_path).read_text())
    defs = closure(spec["components"]["schemas"], component)
    document = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": (f"The closure of {component} (the schema and every component it references, recursively), "
                     "copied unchanged from openapi.yaml of openai/openai-openapi (MIT licence), snapshot of "
                     f"{snapshot}, except that each '#/components/schemas/X' reference became '#/$defs/X'. "
                     "OpenAPI-only keywords (nullable, discriminator, x-*) are left as they are; JSON Schema "
                     "validators ignore them. Produced by tests/data/extract_openapi_schema.py."),
        "$ref": f"#/$defs/{component}",
        "$defs": defs,
    }
    Path(out_path).write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])
