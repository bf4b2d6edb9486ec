"""JSON Schema → the OpenAPI subset Gemini accepts in `functionDeclarations[].parameters` and `responseSchema`.

Gemini's `Schema` object knows a fixed set of fields (KEPT below) and answers 400 INVALID_ARGUMENT
("Unknown name ... Cannot find field") for any other, so everything else is rewritten or dropped:
  - `$ref` into the root's `$defs` / `definitions` is resolved inline (a cyclic reference cannot be,
    and is dropped);
  - `type: [X, "null"]` becomes `type: X, nullable: true`, several types an `anyOf`; `oneOf` becomes
    `anyOf` (exclusivity lost, reported); a lone-schema `allOf` is inlined, object `allOf`s merged;
  - a string `const` becomes a one-value `enum`; `examples` its first value as `example`;
  - formats Gemini does not know for the type, non-string enums, `additionalProperties`, `$schema`,
    and every other keyword are dropped.
Each loss is reported through `drop` as `<where>.<keyword>` (`input_schema.additionalProperties`).
Types are written upper-case, as the API's enum names them.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

KEPT = frozenset({
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
    "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf",
    "propertyOrdering", "default", "items", "minimum", "maximum"})
TYPES = {"string": "STRING", "number": "NUMBER", "integer": "INTEGER", "boolean": "BOOLEAN", "array": "ARRAY",
         "object": "OBJECT", "null": "NULL"}
FORMATS = {"STRING": {"enum", "date-time"}, "NUMBER": {"float", "double"}, "INTEGER": {"int32", "int64"}}
# Keywords that carry nothing Gemini could use and whose loss changes nothing the model sees.
_SILENT = frozenset({"$defs", "definitions", "$id", "$comment"})
_NUMBER_KEYS = ("minimum", "maximum")
_COUNT_KEYS = ("maxItems", "minItems", "minProperties", "maxProperties", "minLength", "maxLength")


class _Reducer:
    def __init__(self, root: Mapping[str, Any], where: str, drop: Callable[[str], None]) -> None:
        self.defs: dict[str, Any] = {}
        for key in ("$defs", "definitions"):
            if isinstance(root.get(key), Mapping):
                self.defs.update({f"#/{key}/{name}": value for name, value in root[key].items()})
        self.where = where
        self._drop = drop
        self._resolving: list[str] = []

    def drop(self, keyword: str) -> None:
        self._drop(f"{self.where}.{keyword}")

    def schema(self, node: Any) -> dict[str, Any]:
        if not isinstance(node, Mapping):
            return {}  # `true` (anything) has no Gemini form: an untyped schema says the same
        if "$ref" in node:
            return self._ref(node)
        out: dict[str, Any] = {}
        node = self._merged(node)
        for key, value in node.items():
            if key in ("type", "anyOf", "oneOf", "allOf", "const", "examples", "enum", "format"):
                continue  # handled below, in an order that lets them see each other
            if key == "properties" and isinstance(value, Mapping):
                properties = {str(name): self.schema(sub) for name, sub in value.items()}
                if properties:
                    out["properties"] = properties
            elif key == "items":
                if isinstance(value, Mapping):
                    out["items"] = self.schema(value)
                else:
                    self.drop("items")  # tuple validation: no Gemini form
            elif key == "required" and isinstance(value, list):
                out["required"] = [str(v) for v in value]
            elif key in _NUMBER_KEYS or key in _COUNT_KEYS:
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    out[key] = value
            elif key in ("title", "description", "pattern") and isinstance(value, str):
                out[key] = value
            elif key in ("nullable",) and isinstance(value, bool):
                out[key] = value
            elif key in ("default", "example", "propertyOrdering"):
                out[key] = value
            elif key not in _SILENT:
                self.drop(key)
        self._type(node, out)
        self._alternatives(node, out)
        self._values(node, out)
        if "required" in out:
            known = out.get("properties", {})
            out["required"] = [name for name in out["required"] if name in known]
            if not out["required"]:
                del out["required"]
        return out

    def _ref(self, node: Mapping[str, Any]) -> dict[str, Any]:
        ref = node["$ref"]
        target = self.defs.get(ref) if isinstance(ref, str) else None
        if target is None or ref in self._resolving:
            self.drop("$ref")  # unknown, external or cyclic: the model gets an untyped value there
            return self.schema({k: v for k, v in node.items() if k != "$ref"})
        self._resolving.append(ref)
        try:
            resolved = self.schema({**target, **{k: v for k, v in node.items() if k != "$ref"}})
        finally:
            self._resolving.pop()
        return resolved

    def _merged(self, node: Mapping[str, Any]) -> Mapping[str, Any]:
        parts = node.get("allOf")
        if not isinstance(parts, list):
            return node
        merged: dict[str, Any] = {k: v for k, v in node.items() if k != "allOf"}
        for part in parts:
            if isinstance(part, Mapping) and "$ref" in part:
                target = self.defs.get(part["$ref"]) if isinstance(part["$ref"], str) else None
                part = target if isinstance(target, Mapping) and part["$ref"] not in self._resolving else None
            if not isinstance(part, Mapping):
                self.drop("allOf")
                continue
            for key, value in part.items():
                if key == "properties" and isinstance(value, Mapping):
                    merged["properties"] = {**value, **(merged.get("properties") or {})}
                elif key == "required" and isinstance(value, list):
                    merged["required"] = list(dict.fromkeys([*(merged.get("required") or []), *value]))
                else:
                    merged.setdefault(key, value)
        return merged

    def _type(self, node: Mapping[str, Any], out: dict[str, Any]) -> None:
        kind = node.get("type")
        kinds = kind if isinstance(kind, list) else [kind] if isinstance(kind, str) else []
        names = [TYPES[k] for k in kinds if isinstance(k, str) and k in TYPES]
        if "NULL" in names and len(names) > 1:
            out["nullable"] = True
            names.remove("NULL")
        if len(names) == 1:
            out["type"] = names[0]
        elif len(names) > 1:
            out.setdefault("anyOf", []).extend({"type": name} for name in names)
        elif "properties" in out:
            out["type"] = "OBJECT"
        elif "items" in out:
            out["type"] = "ARRAY"
        fmt = node.get("format")
        if isinstance(fmt, str):
            if fmt in FORMATS.get(out.get("type", ""), ()):
                out["format"] = fmt
            else:
                self.drop("format")

    def _alternatives(self, node: Mapping[str, Any], out: dict[str, Any]) -> None:
        if isinstance(node.get("oneOf"), list):
            self.drop("oneOf")  # kept as anyOf: "exactly one" loosens to "at least one"
        choices = [c for key in ("anyOf", "oneOf") if isinstance(node.get(key), list) for c in node[key]]
        if not choices:
            return
        schemas = []
        for choice in choices:
            if isinstance(choice, Mapping) and choice.get("type") == "null" and len(choice) == 1:
                out["nullable"] = True
            else:
                schemas.append(self.schema(choice))
        if len(schemas) == 1 and "type" not in out and "anyOf" not in out:
            out.update({k: v for k, v in schemas[0].items() if k not in out})
        elif schemas:
            out.setdefault("anyOf", []).extend(schemas)

    def _values(self, node: Mapping[str, Any], out: dict[str, Any]) -> None:
        enum = node.get("enum")
        if "const" in node:
            if isinstance(node["const"], str):
                enum = [node["const"]]
            else:
                self.drop("const")
        if isinstance(enum, list):
            if enum and all(isinstance(v, str) for v in enum):
                out["enum"] = list(enum)
                out.setdefault("type", "STRING")
            else:
                self.drop("enum")  # Gemini's enums are strings only
        examples = node.get("examples")
        if isinstance(examples, list) and examples:
            out.setdefault("example", examples[0])
            if len(examples) > 1:
                self.drop("examples")
        elif examples is not None:
            self.drop("examples")


def reduce_schema(schema: Mapping[str, Any], *, where: str, drop: Callable[[str], None]) -> dict[str, Any]:
    """`schema` rewritten into Gemini's Schema subset; every loss reported to `drop` (see module docstring)."""
    return _Reducer(schema, where, drop).schema(schema)
