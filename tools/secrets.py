"""Secret fields of tools: the `Secret` marker, and where secrets sit in a tool's arguments and results.

A tool author writes `password: Secret` (or `Annotated[Secret, Field(min_length=12)]`) in a
`ToolArgs` or `ToolOutput` model. Inside a sealing scope (`runtime.sealing.sealing`, opened by the
worker around each tool call) such a field accepts a token and gives the tool the clear value, and
serializes to JSON as a token again: so the runner's normal `model_dump(mode="json")` already
writes tokens into everything it returns, into the idempotency ledger and into stored blobs. Out
of a scope, a token cannot be opened and a secret cannot be written as JSON: failing beats leaking.

`tools.secret_guard.ToolSecrets` does the rest, for one registry: it seals what a model proposes
at the secret paths of the tool named, and around each tool call it searches what comes back
(errors, diffs, facts, results, compensations) for the clear values the call handled.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, PlainSerializer

from contracts.hashing import canonical_json
from contracts.models import FieldChange
from runtime import sealing

# A path to a secret inside a tool's JSON arguments or result: field names, "*" for every item
# of a list or every value of a mapping.
Path = tuple[str, ...]
_MAX_DEPTH = 8


@dataclass(frozen=True)
class SecretField:
    """The marker `Secret` carries; `secret_paths` looks for it."""


def _open(value: Any) -> Any:
    if sealing.is_token(value):
        sealer = sealing.active()
        if sealer is None:
            raise sealing.SecretError("a sealed secret opens only inside a tool call on a worker")
        return sealer.unseal(value)
    if isinstance(value, str) and (sealer := sealing.active()) is not None:
        sealer.saw(value)
    return value


def _seal(value: str) -> Any:
    sealer = sealing.active()
    if sealer is None:
        raise sealing.SecretError("a secret field is written as JSON only inside a tool call on a worker")
    return sealer.seal(value)


Secret = Annotated[
    str,
    BeforeValidator(_open),
    PlainSerializer(_seal, return_type=Any, when_used="json"),
    SecretField(),
]
"""A secret argument or result (a password, an API token): sealed wherever Airlock records it."""


def secret_change(field: str, *, had_value: bool = True) -> FieldChange:
    """The diff line of a secret: that it changed, never its value."""
    return FieldChange(field=field, before=sealing.REDACTED if had_value else None, after=sealing.CHANGED)


# ---- where the secrets are ----------------------------------------------------------------


def secret_paths(model: type[BaseModel]) -> tuple[Path, ...]:
    """Every path at which `model`'s JSON holds a `Secret`, nested models and collections included."""
    return tuple(dict.fromkeys(_model_paths(model, 0)))


def _marked(metadata: Sequence[Any]) -> bool:
    return any(isinstance(m, SecretField) for m in metadata)


def _model_paths(model: type[BaseModel], depth: int) -> Iterator[Path]:
    if depth > _MAX_DEPTH:
        return
    for name, field in model.model_fields.items():
        key = field.alias or name
        if _marked(field.metadata):
            yield (key,)
        else:
            for sub in _type_paths(field.annotation, depth):
                yield (key, *sub)


def _type_paths(tp: Any, depth: int) -> Iterator[Path]:
    origin = get_origin(tp)
    if origin is Annotated:
        base, *metadata = get_args(tp)
        if _marked(metadata):
            yield ()
        else:
            yield from _type_paths(base, depth)
    elif isinstance(tp, type) and issubclass(tp, BaseModel):
        yield from _model_paths(tp, depth + 1)
    elif origin in (Union, types.UnionType):
        for arg in get_args(tp):
            yield from _type_paths(arg, depth)
    elif origin in (list, tuple, set, frozenset) or (isinstance(origin, type) and issubclass(origin, Sequence)):
        for arg in get_args(tp):
            if arg is not Ellipsis:
                yield from (("*", *p) for p in _type_paths(arg, depth))
    elif origin is dict or (isinstance(origin, type) and issubclass(origin, Mapping)):
        args = get_args(tp)
        if len(args) == 2:
            yield from (("*", *p) for p in _type_paths(args[1], depth))


def seal_at(value: Any, paths: Sequence[Path], seal: Callable[[str], Any]) -> Any:
    """`value` with whatever sits at `paths` sealed: a string as it is, any other JSON value as its
    JSON text (so a model that wrote a number still cannot leak it); nulls and tokens stay."""
    for path in paths:
        value = _seal_path(value, path, seal)
    return value


def _seal_path(value: Any, path: Path, seal: Callable[[str], Any]) -> Any:
    if not path:
        if value is None or sealing.is_token(value):
            return value
        return seal(value if isinstance(value, str) else canonical_json(value))
    head, rest = path[0], path[1:]
    if head == "*":
        if isinstance(value, list):
            return [_seal_path(v, rest, seal) for v in value]
        if isinstance(value, dict) and not sealing.is_token(value):
            return {k: _seal_path(v, rest, seal) for k, v in value.items()}
        return value
    if isinstance(value, dict) and head in value:
        return {**value, head: _seal_path(value[head], rest, seal)}
    return value
