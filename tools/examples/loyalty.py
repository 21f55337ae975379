"""A loyalty programme's tools: the complete example of docs/tools.md ("Writing a tool, step by
step"). A read (`loyalty.balance`), a write with its preview, facts and compensation
(`loyalty.redeem`), and the compensation itself (`loyalty.restore`), over tables this module
keeps in the back-office database.

    AIRLOCK_TOOL_MODULES=tools.backoffice,tools.examples.loyalty airlock worker
"""

from __future__ import annotations

import hashlib

from pydantic import Field
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, func, insert, select, update

from tools import Compensation, Effect, FieldChange, Preview, Tier, Tool, ToolArgs, ToolContext, ToolError, ToolOutput

# -- 1. The module's own tables ---------------------------------------------------------------

metadata = MetaData()
balances = Table(
    "loyalty_balances",
    metadata,
    Column("customer_id", String(32), primary_key=True),
    Column("points", Integer, nullable=False),
)
redemptions = Table(
    "loyalty_redemptions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("customer_id", String(32), nullable=False),
    Column("points", Integer, nullable=False),
    Column("reward", String(100), nullable=False),
    Column("status", String(16), nullable=False),
)


def create_schema(engine: Engine) -> None:
    """Called by the worker when it loads the module: create the tables, seed them once."""
    metadata.create_all(engine)
    with engine.begin() as conn:
        if conn.execute(select(func.count()).select_from(balances)).scalar_one() == 0:
            conn.execute(
                insert(balances), [{"customer_id": "C-100", "points": 1200}, {"customer_id": "C-101", "points": 80}]
            )


def _points(ctx: ToolContext, customer_id: str) -> int:
    # `ctx.locking` takes a row lock on PostgreSQL (SQLite's write lock covers it): two writes to
    # one balance run one after the other, each reading what the other left.
    row = ctx.conn.execute(ctx.locking(select(balances.c.points).where(balances.c.customer_id == customer_id))).first()
    if row is None:
        raise ToolError(f"customer {customer_id!r} has no loyalty account")
    points: int = row.points
    return points


# -- 2. A read tool ---------------------------------------------------------------------------


class CustomerRef(ToolArgs):
    customer_id: str = Field(min_length=1, max_length=32, pattern=r"^C-[0-9]+$")


class Balance(ToolOutput):
    customer_id: str
    points: int


def balance(ctx: ToolContext, args: CustomerRef) -> Balance:
    return Balance(customer_id=args.customer_id, points=_points(ctx, args.customer_id))


# -- 3. A write tool: preview, facts, execute -------------------------------------------------


class Redeem(ToolArgs):
    customer_id: str = Field(min_length=1, max_length=32, pattern=r"^C-[0-9]+$")
    points: int = Field(gt=0, le=100_000)
    reward: str = Field(min_length=1, max_length=100)


class Redemption(ToolOutput):
    redemption_id: str
    customer_id: str
    points: int
    points_left: int


def preview_redeem(ctx: ToolContext, args: Redeem) -> Preview:
    """Read-only: what the redemption would change, and the facts the policy decides on."""
    points = _points(ctx, args.customer_id)
    return Preview(
        diff=[
            FieldChange(
                field=f"loyalty[{args.customer_id}].points", before=str(points), after=str(points - args.points)
            )
        ],
        facts={"points_balance": points},
    )


def redeem(ctx: ToolContext, args: Redeem) -> Redemption:
    points = _points(ctx, args.customer_id)
    if args.points > points:
        raise ToolError(f"{args.points} points asked, {points} held")
    # The idempotency key names this call for good: an id derived from it is the same on a retry.
    redemption_id = "R-" + hashlib.sha256((ctx.idempotency_key or "").encode()).hexdigest()[:10].upper()
    ctx.conn.execute(
        update(balances).where(balances.c.customer_id == args.customer_id).values(points=points - args.points)
    )
    ctx.conn.execute(
        insert(redemptions).values(
            id=redemption_id, customer_id=args.customer_id, points=args.points, reward=args.reward, status="redeemed"
        )
    )
    return Redemption(
        redemption_id=redemption_id, customer_id=args.customer_id, points=args.points, points_left=points - args.points
    )


# -- 4. Undo: the compensation and the tool that runs it --------------------------------------


class Restore(ToolArgs):
    redemption_id: str = Field(min_length=1, max_length=32)


class Restored(ToolOutput):
    redemption_id: str
    customer_id: str
    points: int


def _redemption(ctx: ToolContext, redemption_id: str) -> tuple[str, int, str]:
    row = ctx.conn.execute(ctx.locking(select(redemptions).where(redemptions.c.id == redemption_id))).first()
    if row is None:
        raise ToolError(f"no redemption {redemption_id!r}")
    return row.customer_id, row.points, row.status


def preview_restore(ctx: ToolContext, args: Restore) -> Preview:
    customer_id, points, status = _redemption(ctx, args.redemption_id)
    held = _points(ctx, customer_id)
    after = held + points if status == "redeemed" else held
    return Preview(diff=[FieldChange(field=f"loyalty[{customer_id}].points", before=str(held), after=str(after))])


def restore(ctx: ToolContext, args: Restore) -> Restored:
    customer_id, points, status = _redemption(ctx, args.redemption_id)
    if status == "redeemed":  # restoring twice gives the points back once
        held = _points(ctx, customer_id)
        ctx.conn.execute(update(balances).where(balances.c.customer_id == customer_id).values(points=held + points))
        ctx.conn.execute(update(redemptions).where(redemptions.c.id == args.redemption_id).values(status="restored"))
    return Restored(redemption_id=args.redemption_id, customer_id=customer_id, points=points)


def restore_redeemed(args: Redeem, out: Redemption, _: Preview) -> Compensation:
    return Compensation(
        tool="loyalty.restore",
        args={"redemption_id": out.redemption_id},
        note=f"give {out.points} points back to {out.customer_id}",
    )


# -- 5. The catalogue entry -------------------------------------------------------------------

BALANCE = Tool(
    name="loyalty.balance",
    description="A customer's loyalty points.",
    input_model=CustomerRef,
    output_model=Balance,
    tier=Tier.LOW,
    effect=Effect.READ,
    execute=balance,
)


REDEEM = Tool(
    name="loyalty.redeem",
    description="Redeem a customer's loyalty points for a reward.",
    input_model=Redeem,
    output_model=Redemption,
    tier=Tier.MEDIUM,
    effect=Effect.WRITE,
    execute=redeem,
    preview=preview_redeem,
    # The facts its preview gives, with their types: what a rule's `fact:` is checked against.
    facts={"points_balance": int},
    compensation_tool="loyalty.restore",
    compensate=restore_redeemed,
)


RESTORE = Tool(
    name="loyalty.restore",
    description="Give back the points of a redemption (the undo of loyalty.redeem).",
    input_model=Restore,
    output_model=Restored,
    tier=Tier.MEDIUM,
    effect=Effect.WRITE,
    execute=restore,
    preview=preview_restore,
    irreversible="it is itself the undo of loyalty.redeem",
)


TOOLS = [BALANCE, REDEEM, RESTORE]
