from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from sqlalchemy import select, update

from contracts.models import Compensation, Effect, FieldChange, Tier
from tools.backoffice.db import customers
from tools.base import Preview, Tool, ToolArgs, ToolContext, ToolError, ToolOutput

CustomerField = Literal["name", "email", "phone", "tier", "notes"]


class GetCustomer(ToolArgs):
    customer_id: str = Field(min_length=1, max_length=32, description="Customer id, e.g. C-100")


class Customer(ToolOutput):
    customer_id: str
    name: str
    email: str
    phone: str
    tier: str
    notes: str


# What each field's column holds (characters, as PostgreSQL's varchar counts them); notes is
# unbounded text in the database and bounded here.
FIELD_LIMITS: dict[str, int] = {"name": 200, "email": 320, "phone": 64, "tier": 32, "notes": 20_000}


class UpdateCustomer(ToolArgs):
    customer_id: str = Field(min_length=1, max_length=32)
    changes: dict[CustomerField, str] = Field(
        min_length=1,
        description="Fields to change and their new values (at most: name 200, email 320, "
        "phone 64, tier 32, notes 20000 characters)",
    )

    @field_validator("changes")
    @classmethod
    def _fit_columns(cls, changes: dict[str, str]) -> dict[str, str]:
        for name, value in changes.items():
            if len(value) > FIELD_LIMITS[name]:
                raise ValueError(f"{name}: at most {FIELD_LIMITS[name]} characters ({len(value)} given)")
        return changes


class CustomerUpdated(ToolOutput):
    customer_id: str
    changed: list[FieldChange]


def load_customer(ctx: ToolContext, customer_id: str) -> Customer:
    row = ctx.conn.execute(ctx.locking(select(customers).where(customers.c.id == customer_id))).first()
    if row is None:
        raise ToolError(f"no customer {customer_id!r}")
    return Customer(
        customer_id=row.id,
        name=row.name,
        email=row.email,
        phone=row.phone,
        tier=row.tier,
        notes=row.notes,
    )


def get_customer(ctx: ToolContext, args: GetCustomer) -> Customer:
    return load_customer(ctx, args.customer_id)


def diff_customer(ctx: ToolContext, args: UpdateCustomer) -> list[FieldChange]:
    current = load_customer(ctx, args.customer_id).model_dump()
    return [
        FieldChange(field=name, before=current[name], after=value)
        for name, value in args.changes.items()
        if current[name] != value
    ]


def preview_update(ctx: ToolContext, args: UpdateCustomer) -> Preview:
    return Preview(diff=diff_customer(ctx, args))


def update_customer(ctx: ToolContext, args: UpdateCustomer) -> CustomerUpdated:
    changed = diff_customer(ctx, args)
    if changed:
        ctx.conn.execute(
            update(customers).where(customers.c.id == args.customer_id).values({c.field: c.after for c in changed})
        )
    return CustomerUpdated(customer_id=args.customer_id, changed=changed)


def restore_customer(args: UpdateCustomer, out: CustomerUpdated, _: Preview) -> Compensation:
    if not out.changed:
        return Compensation(note="nothing changed")
    return Compensation(
        tool="crm.update_customer",
        args={
            "customer_id": args.customer_id,
            "changes": {c.field: c.before for c in out.changed},
        },
        note="restore the previous values",
    )


TOOLS = [
    Tool(
        name="crm.get_customer",
        description="Look up a customer's contact details and tier.",
        input_model=GetCustomer,
        output_model=Customer,
        tier=Tier.LOW,
        effect=Effect.READ,
        execute=get_customer,
    ),
    Tool(
        name="crm.update_customer",
        description="Change fields of a customer record.",
        input_model=UpdateCustomer,
        output_model=CustomerUpdated,
        tier=Tier.MEDIUM,
        effect=Effect.WRITE,
        execute=update_customer,
        preview=preview_update,
        compensation_tool="crm.update_customer",
        compensate=restore_customer,
    ),
]
