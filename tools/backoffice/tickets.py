from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import Field
from sqlalchemy import insert, select, update

from contracts.models import Compensation, Effect, FieldChange, Tier
from tools.backoffice.db import tickets
from tools.base import Preview, Tool, ToolArgs, ToolContext, ToolError, ToolOutput

Status = Literal["open", "pending", "closed"]
Priority = Literal["low", "normal", "high", "urgent"]


class CreateTicket(ToolArgs):
    subject: str = Field(min_length=1, max_length=300)
    body: str = Field(default="", max_length=20_000)
    priority: Priority = "normal"
    order_id: str | None = Field(default=None, max_length=32)


class TicketChanges(ToolArgs):
    status: Status | None = None
    priority: Priority | None = None
    assignee: str | None = Field(default=None, max_length=200)
    body: str | None = Field(default=None, max_length=20_000)


class UpdateTicket(ToolArgs):
    ticket_id: str = Field(min_length=1, max_length=32)
    changes: TicketChanges


class Ticket(ToolOutput):
    ticket_id: str
    subject: str
    body: str
    status: str
    priority: str
    order_id: str | None
    assignee: str | None


class TicketUpdated(ToolOutput):
    ticket_id: str
    changed: list[FieldChange]


def _load(ctx: ToolContext, ticket_id: str) -> Ticket:
    row = ctx.conn.execute(ctx.locking(select(tickets).where(tickets.c.id == ticket_id))).first()
    if row is None:
        raise ToolError(f"no ticket {ticket_id!r}")
    return Ticket(
        ticket_id=row.id,
        subject=row.subject,
        body=row.body,
        status=row.status,
        priority=row.priority,
        order_id=row.order_id,
        assignee=row.assignee,
    )


def _new_ticket_id(ctx: ToolContext) -> str:
    # Derived from the idempotency key so that a re-executed call names the same ticket.
    seed = ctx.idempotency_key or f"{ctx.workflow_id}/{ctx.step}"
    return "T-" + hashlib.sha256(seed.encode()).hexdigest()[:8].upper()


def preview_create(ctx: ToolContext, args: CreateTicket) -> Preview:
    fields = args.model_dump(exclude_none=True)
    fields["status"] = "open"
    return Preview(diff=[FieldChange(field=k, before=None, after=v) for k, v in fields.items()])


def create_ticket(ctx: ToolContext, args: CreateTicket) -> Ticket:
    ticket_id = _new_ticket_id(ctx)
    ctx.conn.execute(
        insert(tickets).values(
            id=ticket_id,
            subject=args.subject,
            body=args.body,
            status="open",
            priority=args.priority,
            order_id=args.order_id,
        )
    )
    return _load(ctx, ticket_id)


def _diff(ctx: ToolContext, args: UpdateTicket) -> list[FieldChange]:
    current = _load(ctx, args.ticket_id).model_dump()
    return [
        FieldChange(field=k, before=current[k], after=v)
        for k, v in args.changes.model_dump(exclude_unset=True).items()
        if current[k] != v
    ]


def preview_update(ctx: ToolContext, args: UpdateTicket) -> Preview:
    return Preview(diff=_diff(ctx, args))


def update_ticket(ctx: ToolContext, args: UpdateTicket) -> TicketUpdated:
    changed = _diff(ctx, args)
    if changed:
        ctx.conn.execute(
            update(tickets).where(tickets.c.id == args.ticket_id).values({c.field: c.after for c in changed})
        )
    return TicketUpdated(ticket_id=args.ticket_id, changed=changed)


def close_created(args: CreateTicket, out: Ticket, _: Preview) -> Compensation:
    return Compensation(
        tool="tickets.update_ticket",
        args={"ticket_id": out.ticket_id, "changes": {"status": "closed"}},
        note="close the ticket opened by this run",
    )


def restore_ticket(args: UpdateTicket, out: TicketUpdated, _: Preview) -> Compensation:
    if not out.changed:
        return Compensation(note="nothing changed")
    return Compensation(
        tool="tickets.update_ticket",
        args={"ticket_id": out.ticket_id, "changes": {c.field: c.before for c in out.changed}},
        note="restore the previous values",
    )


TOOLS = [
    Tool(
        name="tickets.create_ticket",
        description="Open a support ticket, optionally about an order.",
        input_model=CreateTicket,
        output_model=Ticket,
        tier=Tier.LOW,
        effect=Effect.WRITE,
        execute=create_ticket,
        preview=preview_create,
        compensation_tool="tickets.update_ticket",
        compensate=close_created,
    ),
    Tool(
        name="tickets.update_ticket",
        description="Change a ticket's status, priority, assignee or body.",
        input_model=UpdateTicket,
        output_model=TicketUpdated,
        tier=Tier.LOW,
        effect=Effect.WRITE,
        execute=update_ticket,
        preview=preview_update,
        compensation_tool="tickets.update_ticket",
        compensate=restore_ticket,
    ),
]
