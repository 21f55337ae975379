from __future__ import annotations

import hashlib
from decimal import Decimal

from pydantic import Field
from sqlalchemy import insert, select, update

from contracts.models import Compensation, Effect, FieldChange, Tier
from tools.backoffice.db import cents, refunds, usd
from tools.backoffice.orders import load_order
from tools.base import Preview, Tool, ToolArgs, ToolContext, ToolError, ToolOutput, Usd


class CreateRefund(ToolArgs):
    order_id: str = Field(min_length=1, max_length=32)
    amount_usd: Usd
    reason: str = Field(min_length=1, max_length=500)


class Refund(ToolOutput):
    refund_id: str
    order_id: str
    amount_usd: Decimal
    reason: str
    status: str


class ListRefunds(ToolArgs):
    order_id: str = Field(min_length=1, max_length=32)


class Refunds(ToolOutput):
    order_id: str
    refunds: list[Refund]


class VoidRefund(ToolArgs):
    refund_id: str = Field(min_length=1, max_length=64)


def preview_refund(ctx: ToolContext, args: CreateRefund) -> Preview:
    order = load_order(ctx, args.order_id)
    return Preview(
        diff=[
            FieldChange(
                field=f"orders[{order.order_id}].refunded_usd",
                before=str(order.refunded_usd),
                after=str(order.refunded_usd + args.amount_usd),
            )
        ],
        facts={
            "order_total_usd": str(order.total_usd),
            "refundable_usd": str(order.refundable_usd),
        },
    )


def create_refund(ctx: ToolContext, args: CreateRefund) -> Refund:
    # `load_order` locks the order row for the transaction, so this check cannot race another refund.
    order = load_order(ctx, args.order_id)
    if args.amount_usd > order.refundable_usd:
        raise ToolError(
            f"refund of {args.amount_usd} USD exceeds the {order.refundable_usd} USD "
            f"still refundable on {args.order_id}"
        )
    seed = ctx.idempotency_key or f"{ctx.workflow_id}/{ctx.step}"
    refund_id = "RF-" + hashlib.sha256(seed.encode()).hexdigest()[:10].upper()
    ctx.conn.execute(
        insert(refunds).values(
            id=refund_id,
            order_id=args.order_id,
            amount_cents=cents(args.amount_usd),
            reason=args.reason,
            status="issued",
            created_by=ctx.workflow_id,
        )
    )
    return Refund(
        refund_id=refund_id,
        order_id=args.order_id,
        amount_usd=args.amount_usd,
        reason=args.reason,
        status="issued",
    )


def list_refunds(ctx: ToolContext, args: ListRefunds) -> Refunds:
    rows = ctx.conn.execute(select(refunds).where(refunds.c.order_id == args.order_id).order_by(refunds.c.id)).all()
    return Refunds(
        order_id=args.order_id,
        refunds=[
            Refund(
                refund_id=r.id,
                order_id=r.order_id,
                amount_usd=usd(r.amount_cents),
                reason=r.reason,
                status=r.status,
            )
            for r in rows
        ],
    )


def _load_refund(ctx: ToolContext, refund_id: str) -> Refund:
    row = ctx.conn.execute(ctx.locking(select(refunds).where(refunds.c.id == refund_id))).first()
    if row is None:
        raise ToolError(f"no refund {refund_id!r}")
    return Refund(
        refund_id=row.id,
        order_id=row.order_id,
        amount_usd=usd(row.amount_cents),
        reason=row.reason,
        status=row.status,
    )


def preview_void(ctx: ToolContext, args: VoidRefund) -> Preview:
    refund = _load_refund(ctx, args.refund_id)
    return Preview(
        diff=[FieldChange(field=f"refunds[{refund.refund_id}].status", before=refund.status, after="voided")],
        facts={"amount_usd": str(refund.amount_usd)},
    )


def void_refund(ctx: ToolContext, args: VoidRefund) -> Refund:
    refund = _load_refund(ctx, args.refund_id)
    ctx.conn.execute(update(refunds).where(refunds.c.id == args.refund_id).values(status="voided"))
    return refund.model_copy(update={"status": "voided"})


def void_created(args: CreateRefund, out: Refund, _: Preview) -> Compensation:
    return Compensation(
        tool="payments.void_refund",
        args={"refund_id": out.refund_id},
        note=f"void refund {out.refund_id} of {out.amount_usd} USD",
    )


def reissue_voided(args: VoidRefund, out: Refund, _: Preview) -> Compensation:
    return Compensation(note="a voided refund is not reissued automatically; issue a new refund")


TOOLS = [
    Tool(
        name="payments.create_refund",
        description="Refund part or all of an order to the customer's original payment method.",
        input_model=CreateRefund,
        output_model=Refund,
        tier=Tier.HIGH,
        effect=Effect.WRITE,
        execute=create_refund,
        preview=preview_refund,
        facts={"order_total_usd": Decimal, "refundable_usd": Decimal},
        compensation_tool="payments.void_refund",
        compensate=void_created,
    ),
    Tool(
        name="payments.list_refunds",
        description="List the refunds issued on an order.",
        input_model=ListRefunds,
        output_model=Refunds,
        tier=Tier.LOW,
        effect=Effect.READ,
        execute=list_refunds,
    ),
    Tool(
        name="payments.void_refund",
        description="Void a refund issued in error (the compensation of payments.create_refund).",
        input_model=VoidRefund,
        output_model=Refund,
        tier=Tier.HIGH,
        effect=Effect.WRITE,
        execute=void_refund,
        preview=preview_void,
        facts={"amount_usd": Decimal},
        irreversible="a voided refund is not reissued automatically",
    ),
]
