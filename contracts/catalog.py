"""What a run knows of each tool it may govern, pinned at its start: the tool catalogue.

Beside its tier and effect, each entry says of what kind each argument and each previewed fact
is (`Kind`), so that `airlock policy check` can refuse a rule comparing a number with a string, and
the engine can read a `Decimal` amount, which travels as a string, as the number it is.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from contracts.models import Effect, Tier

# Of what kind a value is, as a rule compares it. `any`: the schema does not say one kind (a
# union), so the value's own JSON kind counts.
Kind = Literal["bool", "number", "string", "list", "object", "any"]
KINDS: tuple[Kind, ...] = ("bool", "number", "string", "list", "object", "any")

# A dotted path's segment standing for every key of a mapping (`changes.*` of `dict[str, str]`).
EVERY_KEY = "*"

_JSON_KINDS: dict[str, Kind] = {
    "boolean": "bool",
    "integer": "number",
    "number": "number",
    "string": "string",
    "array": "list",
    "object": "object",
}


class CatalogEntry(BaseModel):
    """The part of a tool a workflow needs to govern a call, pinned in the run at its start."""

    name: str
    description: str
    tier: Tier
    effect: Effect
    compensation_tool: str | None = None
    irreversible: str | None = None
    # Every argument by dotted path (`changes.name`), and every fact the tool's preview declares,
    # with its kind. Empty in runs started before kinds were pinned: the values' own kinds count.
    arguments: dict[str, Kind] = Field(default_factory=dict)
    facts: dict[str, Kind] = Field(default_factory=dict)


def argument_kinds(schema: dict[str, Any]) -> dict[str, Kind]:
    """Every argument of a tool's input JSON schema (pydantic's), by dotted path, with its kind.
    A mapping's values appear under `path.*`; an optional field has the kind of its value."""
    defs: dict[str, Any] = schema.get("$defs", {})
    kinds: dict[str, Kind] = {}

    def resolve(node: dict[str, Any], seen: frozenset[str]) -> tuple[dict[str, Any], frozenset[str]]:
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            if name in seen or name not in defs:  # a recursive model: not followed further
                return {}, seen
            return resolve(defs[name], seen | {name})
        return node, seen

    def kind_of(node: dict[str, Any], seen: frozenset[str]) -> tuple[Kind, dict[str, Any] | None, frozenset[str]]:
        node, seen = resolve(node, seen)
        branches = node.get("anyOf") or node.get("oneOf")
        if isinstance(branches, list):
            found = [kind_of(b, seen) for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
            # How pydantic writes a Decimal: a number, or the string that carries it exactly. An
            # `int | str` (integer or string) stays a union of kinds.
            raw = {b.get("type") for b in branches if isinstance(b, dict) and b.get("type") != "null"}
            if raw == {"number", "string"}:
                return "number", None, seen
            if len(found) == 1:
                return found[0]
            return "any", None, seen
        json_type = node.get("type")
        if isinstance(json_type, str) and json_type in _JSON_KINDS:
            return _JSON_KINDS[json_type], node, seen
        if "enum" in node or "const" in node:
            values = node.get("enum", [node.get("const")])
            value_kinds = {_value_kind(v) for v in values}
            return (value_kinds.pop() if len(value_kinds) == 1 else "any"), None, seen
        return "any", None, seen

    def walk(node: dict[str, Any], prefix: str, seen: frozenset[str]) -> None:
        node, seen = resolve(node, seen)
        for name, sub in (node.get("properties") or {}).items():
            path = f"{prefix}{name}"
            kind, inner, inner_seen = kind_of(sub, seen)
            kinds[path] = kind
            if kind == "object" and inner is not None:
                walk(inner, path + ".", inner_seen)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and prefix:
            kind, inner, inner_seen = kind_of(extra, seen)
            kinds[prefix + EVERY_KEY] = kind
            if kind == "object" and inner is not None:
                walk(inner, f"{prefix}{EVERY_KEY}.", inner_seen)

    walk(schema, "", frozenset())
    return kinds


def _value_kind(value: Any) -> Kind:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "any"


def kind_at(kinds: dict[str, Kind], path: str) -> Kind | None:
    """The kind of the argument at a dotted path, or None when the tool has no such argument."""
    if path in kinds:
        return kinds[path]
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        # `changes.email` of a mapping `changes` is `changes.*`, at any depth.
        candidate = ".".join([*parts[:i], EVERY_KEY, *parts[i + 1 :]])
        if candidate in kinds:
            return kinds[candidate]
    return None
