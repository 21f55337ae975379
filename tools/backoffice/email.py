from __future__ import annotations

import hashlib

from pydantic import Field
from sqlalchemy import insert

from contracts.models import Effect, FieldChange, Tier
from tools.backoffice.db import emails
from tools.base import Line, Preview, Tool, ToolArgs, ToolContext, ToolOutput

ADDRESS = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class SendEmail(ToolArgs):
    # No whitespace at all (so no CR or LF): both end up in the message's headers.
    to: str = Field(pattern=ADDRESS, max_length=320, description="Recipient address")
    subject: Line = Field(min_length=1, max_length=300, description="One line, no line breaks")
    body: str = Field(min_length=1, max_length=20_000)


class EmailSent(ToolOutput):
    message_id: str
    to: str
    subject: str


def preview_email(ctx: ToolContext, args: SendEmail) -> Preview:
    return Preview(
        diff=[
            FieldChange(field="email.to", after=args.to),
            FieldChange(field="email.subject", after=args.subject),
            FieldChange(field="email.body", after=args.body),
        ],
        facts={"recipient_domain": args.to.rsplit("@", 1)[-1].lower()},
    )


def send_email(ctx: ToolContext, args: SendEmail) -> EmailSent:
    # The demo's mail transport is an outbox table: the row is the sent message.
    seed = ctx.idempotency_key or f"{ctx.workflow_id}/{ctx.step}"
    message_id = "M-" + hashlib.sha256(seed.encode()).hexdigest()[:10].upper()
    ctx.conn.execute(
        insert(emails).values(
            id=message_id,
            to_address=args.to,
            subject=args.subject,
            body=args.body,
            sent_by=ctx.workflow_id,
        )
    )
    return EmailSent(message_id=message_id, to=args.to, subject=args.subject)


TOOLS = [
    Tool(
        name="email.send",
        description="Send an email to a customer.",
        input_model=SendEmail,
        output_model=EmailSent,
        tier=Tier.HIGH,
        effect=Effect.EXTERNAL,
        execute=send_email,
        preview=preview_email,
        facts={"recipient_domain": str},
        irreversible="an email cannot be unsent",
    )
]
