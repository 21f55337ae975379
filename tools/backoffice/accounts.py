"""Customer accounts: set a password, issue and revoke API tokens. The demo of secret fields.

A password is a secret argument and an issued token a secret result (`Secret`): Airlock records
them sealed and shows their diffs as "changed", never their values. The back office itself keeps
only salted hashes, so neither a password nor a token can be read back from it either.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated

from pydantic import Field
from sqlalchemy import Column, ForeignKey, String, Table, insert, select, update

from contracts.models import Compensation, Effect, FieldChange, Tier
from tools import Preview, Secret, Tool, ToolArgs, ToolContext, ToolError, ToolOutput, secret_change
from tools.backoffice.crm import load_customer
from tools.backoffice.db import metadata

# Defined here rather than in `db`, with the same metadata: `create_schema` creates them too.
credentials = Table(
    "credentials",
    metadata,
    Column("customer_id", String(32), ForeignKey("customers.id"), primary_key=True),
    Column("password_hash", String(256), nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("customer_id", String(32), ForeignKey("customers.id"), nullable=False),
    Column("label", String(64), nullable=False),
    Column("token_hash", String(64), nullable=False),
    Column("status", String(16), nullable=False, default="active"),
)

Password = Annotated[Secret, Field(min_length=12, max_length=128, description="The new password")]


class SetPassword(ToolArgs):
    customer_id: str = Field(min_length=1, max_length=32)
    password: Password


class PasswordSet(ToolOutput):
    customer_id: str
    replaced: bool


class IssueApiToken(ToolArgs):
    customer_id: str = Field(min_length=1, max_length=32)
    label: str = Field(min_length=1, max_length=64, description="What the token is for, e.g. 'shop sync'")


class ApiToken(ToolOutput):
    token_id: str
    customer_id: str
    label: str
    token: Secret


class RevokeApiToken(ToolArgs):
    token_id: str = Field(min_length=1, max_length=32)


class TokenRevoked(ToolOutput):
    token_id: str
    status: str


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_password(stored: str, password: str) -> bool:
    _, salt, digest = stored.split("$")
    again = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=2**14, r=8, p=1)
    return hmac.compare_digest(again.hex(), digest)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _has_password(ctx: ToolContext, customer_id: str) -> bool:
    row = ctx.conn.execute(select(credentials.c.customer_id).where(credentials.c.customer_id == customer_id)).first()
    return row is not None


def preview_password(ctx: ToolContext, args: SetPassword) -> Preview:
    load_customer(ctx, args.customer_id)
    had = _has_password(ctx, args.customer_id)
    return Preview(diff=[secret_change(f"customers[{args.customer_id}].password", had_value=had)])


def set_password(ctx: ToolContext, args: SetPassword) -> PasswordSet:
    load_customer(ctx, args.customer_id)
    if args.password.lower() == args.customer_id.lower():
        raise ToolError("the password must not be the customer id")
    stored = hash_password(args.password)
    replaced = _has_password(ctx, args.customer_id)
    if replaced:
        ctx.conn.execute(
            update(credentials).where(credentials.c.customer_id == args.customer_id).values(password_hash=stored)
        )
    else:
        ctx.conn.execute(insert(credentials).values(customer_id=args.customer_id, password_hash=stored))
    return PasswordSet(customer_id=args.customer_id, replaced=replaced)


def _token_id(ctx: ToolContext) -> str:
    seed = ctx.idempotency_key or f"{ctx.workflow_id}/{ctx.step}"
    return "TK-" + hashlib.sha256(seed.encode()).hexdigest()[:10].upper()


def preview_token(ctx: ToolContext, args: IssueApiToken) -> Preview:
    load_customer(ctx, args.customer_id)
    return Preview(diff=[secret_change(f"customers[{args.customer_id}].api_tokens[{args.label}]", had_value=False)])


def issue_api_token(ctx: ToolContext, args: IssueApiToken) -> ApiToken:
    load_customer(ctx, args.customer_id)
    token = "ak_" + secrets.token_urlsafe(24)
    token_id = _token_id(ctx)
    ctx.conn.execute(
        insert(api_tokens).values(
            id=token_id, customer_id=args.customer_id, label=args.label, token_hash=token_hash(token), status="active"
        )
    )
    return ApiToken(token_id=token_id, customer_id=args.customer_id, label=args.label, token=token)


def revoke_api_token(ctx: ToolContext, args: RevokeApiToken) -> TokenRevoked:
    row = ctx.conn.execute(select(api_tokens).where(api_tokens.c.id == args.token_id)).first()
    if row is None:
        raise ToolError(f"no API token {args.token_id!r}")
    ctx.conn.execute(update(api_tokens).where(api_tokens.c.id == args.token_id).values(status="revoked"))
    return TokenRevoked(token_id=args.token_id, status="revoked")


def preview_revoke(ctx: ToolContext, args: RevokeApiToken) -> Preview:
    row = ctx.conn.execute(select(api_tokens.c.status).where(api_tokens.c.id == args.token_id)).first()
    if row is None:
        raise ToolError(f"no API token {args.token_id!r}")
    return Preview(diff=[FieldChange(field=f"api_tokens[{args.token_id}].status", before=row.status, after="revoked")])


def undo_token(_: IssueApiToken, out: ApiToken, __: Preview) -> Compensation:
    return Compensation(
        tool="accounts.revoke_api_token", args={"token_id": out.token_id}, note="revoke the issued token"
    )


TOOLS = [
    Tool(
        name="accounts.set_password",
        description="Set a customer's account password (at least 12 characters).",
        input_model=SetPassword,
        output_model=PasswordSet,
        tier=Tier.HIGH,
        effect=Effect.WRITE,
        execute=set_password,
        preview=preview_password,
        irreversible="only a salted hash of a password is kept, so the previous one cannot be restored",
    ),
    Tool(
        name="accounts.issue_api_token",
        description="Issue a new API token for a customer's account.",
        input_model=IssueApiToken,
        output_model=ApiToken,
        tier=Tier.MEDIUM,
        effect=Effect.WRITE,
        execute=issue_api_token,
        preview=preview_token,
        compensation_tool="accounts.revoke_api_token",
        compensate=undo_token,
    ),
    Tool(
        name="accounts.revoke_api_token",
        description="Revoke an API token by its id.",
        input_model=RevokeApiToken,
        output_model=TokenRevoked,
        tier=Tier.MEDIUM,
        effect=Effect.WRITE,
        execute=revoke_api_token,
        preview=preview_revoke,
        irreversible="a revoked token is not reinstated; issue a new one",
    ),
]
