"""What a tool is: typed input and output, a risk tier, an effect, and how to preview and undo it.

A team adds a tool by writing one module that defines `TOOLS: list[Tool]` and naming the module in
`AIRLOCK_TOOL_MODULES`; Airlock's own code does not change. Writes get their idempotency from the
runner (`tools.runner`), which executes them inside one database transaction together with the
idempotency record, so a tool's `execute` only has to do its work on the connection it is given.
A field typed `Secret` (a password, a token) is sealed wherever Airlock records it and clear only
inside the tool's own call (`tools.secrets`, docs/secrets.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, model_validator
from sqlalchemy import Connection, Select

from contracts.catalog import KINDS, Kind, argument_kinds
from contracts.models import Compensation, Effect, FieldChange, Tier

# Re-exported: part of the API a tool author writes against.
from tools.secrets import Secret, secret_change  # noqa: F401

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)


# Money in arguments: at most cents, and one canonical form ("30", 30 and 30.0 are all "30.00"),
# so that equal amounts hash equal under an idempotency key.
Usd = Annotated[
    Decimal,
    Field(gt=0, max_digits=12, decimal_places=2),
    AfterValidator(lambda d: d.quantize(Decimal("0.01"))),
]


# One line of text: no CR or LF, which mean something downstream (a header ends, another begins).
Line = Annotated[str, Field(pattern=r"^[^\r\n]*$")]


def unstorable(text: str) -> str | None:
    """Why a database could not store `text` as it is, or None. PostgreSQL refuses NUL in any
    text value, and text that is not valid UTF-8 (an unpaired surrogate); SQLite takes both,
    so without this check the two databases would disagree about the same call."""
    if "\x00" in text:
        return "text may not contain NUL (U+0000)"
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        return "text may not contain unpaired surrogates (not valid UTF-8)"
    return None


def _walk(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        why = unstorable(value)
        return f"{path}: {why}" if why else None
    if isinstance(value, BaseModel):
        value = {name: getattr(value, name) for name in type(value).model_fields}
    if isinstance(value, dict):
        for k, v in value.items():
            where = f"{path}.{k}" if path else str(k)
            if (why := _walk(k, where) if isinstance(k, str) else None) or (why := _walk(v, where)):
                return why
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            if why := _walk(v, f"{path}.{i}"):
                return why
    return None


class ToolArgs(BaseModel):
    """Base for tool inputs: arguments a model wrote, so unknown keys are an error, and text
    that a database would refuse (NUL, invalid UTF-8) is refused here, for every tool and on
    every database alike, as invalid arguments before anything runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="after")
    def _storable(self) -> ToolArgs:
        if why := _walk(self, ""):
            raise ValueError(why)
        return self


class ToolOutput(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ToolError(Exception):
    """A tool refused the call for a reason the agent should hear (not worth retrying)."""


@dataclass(frozen=True)
class Caller:
    """Whom a call is made for, from the run's own input and never from the model's arguments:
    a tool scopes its data by these (the requester's own accounts, say), not by an argument a
    prompt injection could rewrite."""

    workspace: str = ""
    requested_by: str = ""
    agent: str = ""


@dataclass(frozen=True)
class ToolContext:
    """What a tool gets to work with. `conn` is inside the transaction that also records the call."""

    conn: Connection
    workflow_id: str = ""
    step: int = 0
    idempotency_key: str | None = None
    caller: Caller = field(default_factory=Caller)

    @property
    def writing(self) -> bool:
        """Inside a write's transaction (the runner's, under an idempotency key)."""
        return self.idempotency_key is not None

    def locking(self, query: Select[Any]) -> Select[Any]:
        """`query` as a write must read the rows it will change: locked until the write commits
        (PostgreSQL `SELECT ... FOR UPDATE`), so two writes to one row run one after the other and
        each reads the "before" values the other left. On SQLite the write transaction already
        holds the database's write lock (BEGIN IMMEDIATE) and no FOR UPDATE is rendered. Outside
        a write (a preview, a read) the query is left as it is."""
        return query.with_for_update() if self.writing else query


_FACT_TYPES: dict[type, Kind] = {
    bool: "bool",
    int: "number",
    float: "number",
    Decimal: "number",
    str: "string",
    list: "list",
    dict: "object",
}


def fact_kind(declared: object) -> Kind | None:
    """The kind of a declared fact type (`Decimal` is a number), or None when it names none."""
    if isinstance(declared, type):
        return _FACT_TYPES.get(declared)
    return next((k for k in KINDS if k == declared), None)


@dataclass(frozen=True)
class Preview:
    """What a write would change, and the facts the policy needs to decide on it."""

    diff: list[FieldChange] = field(default_factory=list)
    facts: dict[str, JsonValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Tool(Generic[In, Out]):
    name: str
    description: str
    input_model: type[In]
    output_model: type[Out]
    tier: Tier
    effect: Effect
    execute: Callable[[ToolContext, In], Out]
    preview: Callable[[ToolContext, In], Preview] | None = None
    # The tool that undoes this one, and how to build its arguments from an executed call.
    compensation_tool: str | None = None
    compensate: Callable[[In, Out, Preview], Compensation] | None = None
    # Named here so the policy reviewer and the report can say why a write cannot be undone.
    irreversible: str | None = None
    # The facts `preview` gives, each with its type (bool, int, float, Decimal, str, list, dict,
    # or a kind's name): what `airlock policy check` holds a rule's `fact:` to, and how the
    # engine reads the value (a Decimal fact travels as a string and is compared as a number).
    facts: Mapping[str, type | Kind] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, declared in self.facts.items():
            if fact_kind(declared) is None:
                raise ValueError(
                    f"tool {self.name}: fact {name!r} is declared as {declared!r}; "
                    f"use bool, int, float, Decimal, str, list, dict or one of {', '.join(KINDS)}"
                )
        if self.facts and self.preview is None:
            raise ValueError(f"tool {self.name}: facts are what a preview gives; this tool has no preview")
        if (self.compensate is None) != (self.compensation_tool is None):
            raise ValueError(f"tool {self.name}: compensation_tool and compensate go together")
        if self.effect is not Effect.READ and self.compensate is None and not self.irreversible:
            raise ValueError(
                f"tool {self.name}: a {self.effect} tool must name its compensation or say why it is irreversible"
            )

    @property
    def activity_name(self) -> str:
        return f"tool.{self.name}"

    def json_schema(self) -> dict[str, Any]:
        return self.input_model.model_json_schema()

    def argument_kinds(self) -> dict[str, Kind]:
        """Every argument by dotted path, with its kind, from the input model's schema."""
        return argument_kinds(self.json_schema())

    def fact_kinds(self) -> dict[str, Kind]:
        return {name: kind for name, declared in self.facts.items() if (kind := fact_kind(declared)) is not None}

    def undo_for(self, args: In, output: Out, preview: Preview) -> Compensation:
        if self.compensate is not None:
            return self.compensate(args, output, preview)
        return Compensation(note=self.irreversible or "nothing to undo")
