"""A team's own tool, added without touching Airlock: one module, named in AIRLOCK_TOOL_MODULES."""

from __future__ import annotations

from pydantic import Field

from tools import Effect, Tier, Tool, ToolArgs, ToolContext, ToolOutput


class Points(ToolArgs):
    customer_id: str = Field(min_length=1)


class Balance(ToolOutput):
    customer_id: str
    points: int


def balance(ctx: ToolContext, args: Points) -> Balance:
    return Balance(customer_id=args.customer_id, points=len(args.customer_id) * 100)


TOOLS = [
    Tool(
        name="loyalty.balance",
        description="A customer's loyalty points.",
        input_model=Points,
        output_model=Balance,
        tier=Tier.LOW,
        effect=Effect.READ,
        execute=balance,
    )
]
