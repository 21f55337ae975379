"""What the tool catalogue says each argument and each previewed fact is: read from the tool's input
model (its JSON schema) and from the facts its preview declares, so that a rule can be held to
the kind of the field it tests."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import BaseModel, Field

from contracts.catalog import argument_kinds, kind_at
from tools import Effect, Preview, Tier, Tool, ToolArgs, ToolOutput
from tools.registry import load_registry


class Address(BaseModel):
    street: str
    postcode: str | None = None


class Args(ToolArgs):
    amount_usd: Decimal
    count: int = 1
    ratio: float = 0.5
    urgent: bool = False
    memo: str | None = None
    tags: list[str] = Field(default_factory=list)
    changes: dict[str, str] = Field(default_factory=dict)
    address: Address | None = None
    either: int | str = 0


class Out(ToolOutput):
    ok: bool


def test_every_argument_has_the_kind_of_its_schema() -> None:
    """A Decimal is a number (it travels as a string), an optional field has its value's kind, a
    mapping's values sit under `path.*`, a nested model's fields under its path, and a union of
    kinds is `any`."""
    kinds = argument_kinds(Args.model_json_schema())
    assert kinds == {
        "amount_usd": "number",
        "count": "number",
        "ratio": "number",
        "urgent": "bool",
        "memo": "string",
        "tags": "list",
        "changes": "object",
        "changes.*": "string",
        "address": "object",
        "address.street": "string",
        "address.postcode": "string",
        "either": "any",
    }
    assert kind_at(kinds, "changes.email") == "string"
    assert kind_at(kinds, "address.city") is None


def _tool(**overrides: object) -> Tool[Args, Out]:
    fields: dict[str, object] = dict(
        name="t.write",
        description="a write",
        input_model=Args,
        output_model=Out,
        tier=Tier.LOW,
        effect=Effect.READ,
        execute=lambda ctx, args: Out(ok=True),
        preview=lambda ctx, args: Preview(),
    )
    fields.update(overrides)
    return Tool(**fields)  # type: ignore[arg-type]


def test_a_tool_declares_its_facts_with_types_and_the_catalogue_pins_their_kinds() -> None:
    """`facts={"balance_usd": Decimal, ...}` becomes kinds in the catalogue entry."""
    tool = _tool(facts={"balance_usd": Decimal, "known": bool, "holder": str, "tags": "list"})
    assert tool.fact_kinds() == {"balance_usd": "number", "known": "bool", "holder": "string", "tags": "list"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"facts": {"when": bytes}}, "fact 'when' is declared as <class 'bytes'>; use bool, int, float, Decimal"),
        ({"facts": {"known": bool}, "preview": None}, "facts are what a preview gives; this tool has no preview"),
    ],
)
def test_a_fact_declaration_the_policy_cannot_use_is_refused(overrides: dict[str, object], message: str) -> None:
    """A fact of a type no rule compares, or facts on a tool that previews nothing, are mistakes
    the tool's author hears about when the module loads."""
    with pytest.raises(ValueError, match=message):
        _tool(**overrides)


def test_the_shipped_tools_pin_argument_and_fact_kinds() -> None:
    """The back office's refund says its amount is a number and its preview's refundable amount too."""
    catalog = {e.name: e for e in load_registry(["tools.backoffice"]).catalog()}
    refund = catalog["payments.create_refund"]
    assert refund.arguments["amount_usd"] == "number" and refund.arguments["order_id"] == "string"
    assert refund.facts == {"order_total_usd": "number", "refundable_usd": "number"}
