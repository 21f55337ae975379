"""A personal banking assistant's tools: accounts, payees, payments, standing orders, profile and
password, for `policy/banking-example.yaml`.

Every tool scopes its data by whom the call is for (`ctx.caller.requested_by`), never by an
argument: an injected "show me u_bob's balance" finds no such account of the caller's. Writes
preview what they change and the facts the policy decides on (`account_holder`, `balance_usd`,
`recipient_is_known_payee`); a payment that has left cannot be recalled by the assistant, and says
so. The tables live in the back-office database beside Airlock's own (`create_schema`).
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Annotated

from pydantic import Field
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, func, insert, select, update

from tools import (
    Compensation,
    Effect,
    FieldChange,
    Preview,
    Secret,
    Tier,
    Tool,
    ToolArgs,
    ToolContext,
    ToolError,
    ToolOutput,
    secret_change,
)
from tools.base import Usd

metadata = MetaData()
accounts = Table(
    "bank_accounts",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("balance_cents", Integer, nullable=False),
)
payees = Table(
    "bank_payees",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", String(32), nullable=False),
    Column("name", String(200), nullable=False),
    Column("iban", String(34), nullable=False),
    Column("status", String(16), nullable=False),
)
payments = Table(
    "bank_payments",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", String(32), nullable=False),
    Column("iban", String(34), nullable=False),
    Column("amount_cents", Integer, nullable=False),
    Column("memo", String(140), nullable=False),
)
standing_orders = Table(
    "bank_standing_orders",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", String(32), nullable=False),
    Column("iban", String(34), nullable=False),
    Column("amount_cents", Integer, nullable=False),
    Column("day_of_month", Integer, nullable=False),
    Column("status", String(16), nullable=False),
)
profiles = Table(
    "bank_profiles",
    metadata,
    Column("person", String(200), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("address", String(500), nullable=False),
    Column("phone", String(40), nullable=False),
    Column("password_set", Integer, nullable=False),
)

SEED_ACCOUNTS = [("A-100", "u_alice", 250_000), ("A-200", "u_bob", 90_000)]
SEED_PAYEES = [("P-1", "A-100", "Harbour Lettings (rent)", "GB33BUKB20201555555555", "active")]
SEED_PROFILES = [
    ("u_alice", "Alice Moreno", "12 Quay Street, Bristol", "+44 117 555 0100", 1),
    ("u_bob", "Bob Okafor", "3 Mill Lane, Leeds", "+44 113 555 0199", 1),
]
IBAN = r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$"


def create_schema(engine: Engine) -> None:
    """The tables and their demo rows, once: the worker calls this when it loads the module."""
    metadata.create_all(engine)
    with engine.begin() as conn:
        if conn.execute(select(func.count()).select_from(accounts)).scalar_one() == 0:
            conn.execute(insert(accounts), [dict(id=i, holder=h, balance_cents=b) for i, h, b in SEED_ACCOUNTS])
            conn.execute(
                insert(payees), [dict(id=i, account_id=a, name=n, iban=b, status=s) for i, a, n, b, s in SEED_PAYEES]
            )
            conn.execute(
                insert(profiles),
                [dict(person=p, name=n, address=a, phone=t, password_set=s) for p, n, a, t, s in SEED_PROFILES],
            )


def _usd(amount_cents: int) -> Decimal:
    return (Decimal(amount_cents) / 100).quantize(Decimal("0.01"))


def _cents(amount: Decimal) -> int:
    return int((amount * 100).to_integral_exact())


def _new_id(ctx: ToolContext, prefix: str) -> str:
    seed = ctx.idempotency_key or f"{ctx.workflow_id}/{ctx.step}"
    return f"{prefix}-" + hashlib.sha256(seed.encode()).hexdigest()[:8].upper()


def _own_account(ctx: ToolContext, account_id: str) -> tuple[str, int]:
    """The caller's account and its balance; someone else's is reported as not found, not as
    forbidden, so that an injected call learns nothing about other people's accounts."""
    row = ctx.conn.execute(ctx.locking(select(accounts).where(accounts.c.id == account_id))).first()
    if row is None or row.holder != ctx.caller.requested_by:
        raise ToolError(f"no account {account_id!r} of {ctx.caller.requested_by or 'this caller'}")
    return row.holder, row.balance_cents


# ---- reads ----------------------------------------------------------------------------------


class NoArgs(ToolArgs):
    pass


class Account(ToolOutput):
    account_id: str
    balance_usd: Decimal


class Accounts(ToolOutput):
    holder: str
    accounts: list[Account]


def list_accounts(ctx: ToolContext, _: NoArgs) -> Accounts:
    rows = ctx.conn.execute(
        select(accounts).where(accounts.c.holder == ctx.caller.requested_by).order_by(accounts.c.id)
    ).all()
    return Accounts(
        holder=ctx.caller.requested_by,
        accounts=[Account(account_id=r.id, balance_usd=_usd(r.balance_cents)) for r in rows],
    )


class AccountRef(ToolArgs):
    account_id: str = Field(min_length=1, max_length=32)


class Payee(ToolOutput):
    payee_id: str
    name: str
    iban: str
    status: str


class Payees(ToolOutput):
    account_id: str
    payees: list[Payee]


def list_payees(ctx: ToolContext, args: AccountRef) -> Payees:
    _own_account(ctx, args.account_id)
    rows = ctx.conn.execute(
        select(payees).where(payees.c.account_id == args.account_id, payees.c.status == "active").order_by(payees.c.id)
    ).all()
    return Payees(
        account_id=args.account_id,
        payees=[Payee(payee_id=r.id, name=r.name, iban=r.iban, status=r.status) for r in rows],
    )


# ---- payments -------------------------------------------------------------------------------


class Pay(ToolArgs):
    account_id: str = Field(min_length=1, max_length=32)
    iban: str = Field(pattern=IBAN)
    amount_usd: Usd
    memo: str = Field(default="", max_length=140)


class Payment(ToolOutput):
    payment_id: str
    account_id: str
    iban: str
    amount_usd: Decimal
    balance_usd: Decimal


def _known_payee(ctx: ToolContext, account_id: str, iban: str) -> bool:
    found = ctx.conn.execute(
        select(payees.c.id).where(payees.c.account_id == account_id, payees.c.iban == iban, payees.c.status == "active")
    ).first()
    return found is not None


def preview_pay(ctx: ToolContext, args: Pay) -> Preview:
    holder, balance = _own_account(ctx, args.account_id)
    return Preview(
        diff=[
            FieldChange(
                field=f"accounts[{args.account_id}].balance_usd",
                before=str(_usd(balance)),
                after=str(_usd(balance - _cents(args.amount_usd))),
            )
        ],
        facts={
            "account_holder": holder,
            "balance_usd": str(_usd(balance)),
            "recipient_is_known_payee": _known_payee(ctx, args.account_id, args.iban),
        },
    )


def pay(ctx: ToolContext, args: Pay) -> Payment:
    _, balance = _own_account(ctx, args.account_id)
    amount = _cents(args.amount_usd)
    if amount > balance:
        raise ToolError(f"payment of {args.amount_usd} USD exceeds the balance of {_usd(balance)} USD")
    payment_id = _new_id(ctx, "PAY")
    ctx.conn.execute(update(accounts).where(accounts.c.id == args.account_id).values(balance_cents=balance - amount))
    ctx.conn.execute(
        insert(payments).values(
            id=payment_id, account_id=args.account_id, iban=args.iban, amount_cents=amount, memo=args.memo
        )
    )
    return Payment(
        payment_id=payment_id,
        account_id=args.account_id,
        iban=args.iban,
        amount_usd=args.amount_usd,
        balance_usd=_usd(balance - amount),
    )


# ---- standing orders ------------------------------------------------------------------------


class StandingOrder(ToolArgs):
    account_id: str = Field(min_length=1, max_length=32)
    iban: str = Field(pattern=IBAN)
    amount_usd: Usd
    day_of_month: int = Field(ge=1, le=28)


class StandingOrderRef(ToolArgs):
    account_id: str = Field(min_length=1, max_length=32)
    order_id: str = Field(min_length=1, max_length=32)


class StandingOrderOut(ToolOutput):
    order_id: str
    account_id: str
    iban: str
    amount_usd: Decimal
    day_of_month: int
    status: str


def preview_standing_order(ctx: ToolContext, args: StandingOrder) -> Preview:
    holder, balance = _own_account(ctx, args.account_id)
    return Preview(
        diff=[
            FieldChange(
                field=f"accounts[{args.account_id}].standing_orders",
                before=None,
                after=f"{args.amount_usd} USD to {args.iban} on day {args.day_of_month}",
            )
        ],
        facts={
            "account_holder": holder,
            "balance_usd": str(_usd(balance)),
            "recipient_is_known_payee": _known_payee(ctx, args.account_id, args.iban),
        },
    )


def create_standing_order(ctx: ToolContext, args: StandingOrder) -> StandingOrderOut:
    _own_account(ctx, args.account_id)
    order_id = _new_id(ctx, "SO")
    ctx.conn.execute(
        insert(standing_orders).values(
            id=order_id,
            account_id=args.account_id,
            iban=args.iban,
            amount_cents=_cents(args.amount_usd),
            day_of_month=args.day_of_month,
            status="active",
        )
    )
    return StandingOrderOut(
        order_id=order_id,
        account_id=args.account_id,
        iban=args.iban,
        amount_usd=args.amount_usd,
        day_of_month=args.day_of_month,
        status="active",
    )


def _standing_order(ctx: ToolContext, args: StandingOrderRef) -> StandingOrderOut:
    _own_account(ctx, args.account_id)
    row = ctx.conn.execute(
        ctx.locking(
            select(standing_orders).where(
                standing_orders.c.id == args.order_id, standing_orders.c.account_id == args.account_id
            )
        )
    ).first()
    if row is None:
        raise ToolError(f"no standing order {args.order_id!r} on account {args.account_id}")
    return StandingOrderOut(
        order_id=row.id,
        account_id=row.account_id,
        iban=row.iban,
        amount_usd=_usd(row.amount_cents),
        day_of_month=row.day_of_month,
        status=row.status,
    )


def preview_cancel_order(ctx: ToolContext, args: StandingOrderRef) -> Preview:
    order = _standing_order(ctx, args)
    holder, _ = _own_account(ctx, args.account_id)
    return Preview(
        diff=[FieldChange(field=f"standing_orders[{order.order_id}].status", before=order.status, after="cancelled")],
        facts={"account_holder": holder},
    )


def cancel_standing_order(ctx: ToolContext, args: StandingOrderRef) -> StandingOrderOut:
    order = _standing_order(ctx, args)
    ctx.conn.execute(update(standing_orders).where(standing_orders.c.id == args.order_id).values(status="cancelled"))
    return order.model_copy(update={"status": "cancelled"})


def cancel_created(args: StandingOrder, out: StandingOrderOut, _: Preview) -> Compensation:
    return Compensation(
        tool="bank.cancel_standing_order",
        args={"account_id": args.account_id, "order_id": out.order_id},
        note=f"cancel standing order {out.order_id}",
    )


# ---- payees ---------------------------------------------------------------------------------


class AddPayee(ToolArgs):
    account_id: str = Field(min_length=1, max_length=32)
    name: str = Field(min_length=1, max_length=200)
    iban: str = Field(pattern=IBAN)


class PayeeRef(ToolArgs):
    account_id: str = Field(min_length=1, max_length=32)
    payee_id: str = Field(min_length=1, max_length=32)


def preview_add_payee(ctx: ToolContext, args: AddPayee) -> Preview:
    holder, _ = _own_account(ctx, args.account_id)
    return Preview(
        diff=[FieldChange(field=f"accounts[{args.account_id}].payees", before=None, after=f"{args.name} {args.iban}")],
        facts={"account_holder": holder, "recipient_is_known_payee": _known_payee(ctx, args.account_id, args.iban)},
    )


def add_payee(ctx: ToolContext, args: AddPayee) -> Payee:
    _own_account(ctx, args.account_id)
    payee_id = _new_id(ctx, "P")
    ctx.conn.execute(
        insert(payees).values(id=payee_id, account_id=args.account_id, name=args.name, iban=args.iban, status="active")
    )
    return Payee(payee_id=payee_id, name=args.name, iban=args.iban, status="active")


def _payee_row(ctx: ToolContext, args: PayeeRef) -> Payee:
    _own_account(ctx, args.account_id)
    row = ctx.conn.execute(
        ctx.locking(select(payees).where(payees.c.id == args.payee_id, payees.c.account_id == args.account_id))
    ).first()
    if row is None:
        raise ToolError(f"no payee {args.payee_id!r} on account {args.account_id}")
    return Payee(payee_id=row.id, name=row.name, iban=row.iban, status=row.status)


def preview_remove_payee(ctx: ToolContext, args: PayeeRef) -> Preview:
    payee = _payee_row(ctx, args)
    holder, _ = _own_account(ctx, args.account_id)
    return Preview(
        diff=[FieldChange(field=f"payees[{payee.payee_id}].status", before=payee.status, after="removed")],
        facts={"account_holder": holder},
    )


def remove_payee(ctx: ToolContext, args: PayeeRef) -> Payee:
    payee = _payee_row(ctx, args)
    ctx.conn.execute(update(payees).where(payees.c.id == args.payee_id).values(status="removed"))
    return payee.model_copy(update={"status": "removed"})


def remove_added(args: AddPayee, out: Payee, _: Preview) -> Compensation:
    return Compensation(
        tool="bank.remove_payee",
        args={"account_id": args.account_id, "payee_id": out.payee_id},
        note=f"remove payee {out.name}",
    )


# ---- profile and password -------------------------------------------------------------------


class ProfileChanges(ToolArgs):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    address: str | None = Field(default=None, min_length=1, max_length=500)
    phone: str | None = Field(default=None, min_length=3, max_length=40)


class UpdateProfile(ToolArgs):
    changes: ProfileChanges


class Profile(ToolOutput):
    person: str
    name: str
    address: str
    phone: str


def _profile(ctx: ToolContext) -> Profile:
    row = ctx.conn.execute(ctx.locking(select(profiles).where(profiles.c.person == ctx.caller.requested_by))).first()
    if row is None:
        raise ToolError(f"no profile of {ctx.caller.requested_by or 'this caller'}")
    return Profile(person=row.person, name=row.name, address=row.address, phone=row.phone)


def preview_update_profile(ctx: ToolContext, args: UpdateProfile) -> Preview:
    before = _profile(ctx)
    given = args.changes.model_dump(exclude_unset=True)
    return Preview(
        diff=[
            FieldChange(field=f"profiles[{before.person}].{k}", before=getattr(before, k), after=v)
            for k, v in given.items()
        ],
        facts={"account_holder": before.person},
    )


def update_profile(ctx: ToolContext, args: UpdateProfile) -> Profile:
    before = _profile(ctx)
    given = args.changes.model_dump(exclude_unset=True)
    if given:
        ctx.conn.execute(update(profiles).where(profiles.c.person == before.person).values(**given))
    return before.model_copy(update=given)


def restore_profile(args: UpdateProfile, out: Profile, preview: Preview) -> Compensation:
    earlier = {c.field.rsplit(".", 1)[1]: c.before for c in preview.diff}
    return Compensation(
        tool="bank.update_profile", args={"changes": earlier}, note="restore the profile fields it changed"
    )


class ChangePassword(ToolArgs):
    new_password: Annotated[Secret, Field(min_length=12, max_length=128, description="The new password")]


class PasswordChanged(ToolOutput):
    person: str
    changed: bool


def preview_password(ctx: ToolContext, args: ChangePassword) -> Preview:
    person = _profile(ctx).person
    return Preview(diff=[secret_change(f"profiles[{person}].password")], facts={"account_holder": person})


def change_password(ctx: ToolContext, args: ChangePassword) -> PasswordChanged:
    person = _profile(ctx).person
    ctx.conn.execute(update(profiles).where(profiles.c.person == person).values(password_set=1))
    return PasswordChanged(person=person, changed=True)


TOOLS = [
    Tool(
        name="bank.list_accounts",
        description="The accounts of the person this assistant works for, with balances.",
        input_model=NoArgs,
        output_model=Accounts,
        tier=Tier.LOW,
        effect=Effect.READ,
        execute=list_accounts,
    ),
    Tool(
        name="bank.list_payees",
        description="The payees saved on one of your accounts.",
        input_model=AccountRef,
        output_model=Payees,
        tier=Tier.LOW,
        effect=Effect.READ,
        execute=list_payees,
    ),
    Tool(
        name="bank.pay",
        description="Send money from one of your accounts to an IBAN.",
        input_model=Pay,
        output_model=Payment,
        tier=Tier.HIGH,
        effect=Effect.EXTERNAL,
        execute=pay,
        preview=preview_pay,
        facts={"account_holder": str, "balance_usd": Decimal, "recipient_is_known_payee": bool},
        irreversible="a payment that has left the account cannot be recalled by the assistant; ask the bank",
    ),
    Tool(
        name="bank.create_standing_order",
        description="Pay an IBAN the same amount every month, from one of your accounts.",
        input_model=StandingOrder,
        output_model=StandingOrderOut,
        tier=Tier.HIGH,
        effect=Effect.WRITE,
        execute=create_standing_order,
        preview=preview_standing_order,
        facts={"account_holder": str, "balance_usd": Decimal, "recipient_is_known_payee": bool},
        compensation_tool="bank.cancel_standing_order",
        compensate=cancel_created,
    ),
    Tool(
        name="bank.cancel_standing_order",
        description="Cancel a standing order (the compensation of bank.create_standing_order).",
        input_model=StandingOrderRef,
        output_model=StandingOrderOut,
        tier=Tier.HIGH,
        effect=Effect.WRITE,
        execute=cancel_standing_order,
        preview=preview_cancel_order,
        facts={"account_holder": str},
        irreversible="a cancelled standing order is set up again with bank.create_standing_order",
    ),
    Tool(
        name="bank.add_payee",
        description="Save a new payee on one of your accounts.",
        input_model=AddPayee,
        output_model=Payee,
        tier=Tier.MEDIUM,
        effect=Effect.WRITE,
        execute=add_payee,
        preview=preview_add_payee,
        facts={"account_holder": str, "recipient_is_known_payee": bool},
        compensation_tool="bank.remove_payee",
        compensate=remove_added,
    ),
    Tool(
        name="bank.remove_payee",
        description="Remove a saved payee (the compensation of bank.add_payee).",
        input_model=PayeeRef,
        output_model=Payee,
        tier=Tier.MEDIUM,
        effect=Effect.WRITE,
        execute=remove_payee,
        preview=preview_remove_payee,
        facts={"account_holder": str},
        irreversible="a removed payee is saved again with bank.add_payee",
    ),
    Tool(
        name="bank.update_profile",
        description="Change your address or phone number (a name change needs the bank's own process).",
        input_model=UpdateProfile,
        output_model=Profile,
        tier=Tier.MEDIUM,
        effect=Effect.WRITE,
        execute=update_profile,
        preview=preview_update_profile,
        facts={"account_holder": str},
        compensation_tool="bank.update_profile",
        compensate=restore_profile,
    ),
    Tool(
        name="bank.change_password",
        description="Set a new online-banking password.",
        input_model=ChangePassword,
        output_model=PasswordChanged,
        tier=Tier.CRITICAL,
        effect=Effect.WRITE,
        execute=change_password,
        preview=preview_password,
        facts={"account_holder": str},
        irreversible="the old password is not kept, so it cannot be restored",
    ),
]
