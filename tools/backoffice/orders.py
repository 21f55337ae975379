from __future__ import annotations

from decimal import Decimal

from pydantic import Field
from sqlalchemy import func, select

from contracts.models import Effect, Tier
from tools.backoffice.db import orders, refunds, usd
from tools.base import Tool, ToolArgs, ToolContext, ToolError, ToolOutput


class GetOrder(ToolArgs):
    order_id: str = Field(min_length=1, max_length=32, description="Order id, e.g. ORD-1001")


class Order(ToolOutput):
    order_id: str
    customer_id: str
    status: str
    items: str
    total_usd: Decimal
    refunded_usd: Decimal
    refundable_usd: Decimal


def load_order(ctx: ToolContext, order_id: str) -> Order:
    # In a write, the order row is locked first: every refund of the order (and its check of
    # what is still refundable) then runs after the others have committed.
    row = ctx.conn.execute(ctx.locking(select(orders).where(orders.c.id == order_id))).first()
    if row is None:
        raise ToolError(f"no order {order_id!r}")
    refunded = ctx.conn.execute(
        select(func.coalesce(func.sum(refunds.c.amount_cents), 0)).where(
            refunds.c.order_id == order_id, refunds.c.status == "issued"
        )
    ).scalar_one()
    return Order(
        order_id=row.id,
        customer_id=row.customer_id,
        status=row.status,
        items=row.items,
        total_usd=usd(row.total_cents),
        refunded_usd=usd(refunded),
        refundable_usd=usd(row.total_cents - refunded),
    )


def get_order(ctx: ToolContext, args: GetOrder) -> Order:
    return load_order(ctx, args.order_id)


TOOLS = [
    Tool(
        name="orders.get_order",
        description="Look up an order: customer, items, total, and how much is still refundable.",
        input_model=GetOrder,
        output_model=Order,
        tier=Tier.LOW,
        effect=Effect.READ,
        execute=get_order,
    )
]
