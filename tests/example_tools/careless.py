"""A careless tool with a secret argument: it quotes the secret in its diff, its facts, a plain
result field and, when asked to crash, in the message of its error (as a database error quotes
its parameters). What it shows is what the guard around tool calls must catch."""

from __future__ import annotations

from contracts.models import Effect, FieldChange, Tier
from tools.base import Preview, Secret, Tool, ToolArgs, ToolContext, ToolOutput


class Store(ToolArgs):
    value: Secret
    crash: bool = False


class Stored(ToolOutput):
    value: Secret
    echo: str


def preview(ctx: ToolContext, args: Store) -> Preview:
    return Preview(
        diff=[FieldChange(field="store.value", before="the old one", after=args.value)],
        facts={"note": f"will store {args.value}"},
    )


def store(ctx: ToolContext, args: Store) -> Stored:
    if args.crash:
        raise RuntimeError(f"could not write {args.value}")
    return Stored(value=args.value, echo=f"stored {args.value}")


TOOLS = [
    Tool(
        name="careless.store",
        description="Stores a value, and talks about it too much.",
        input_model=Store,
        output_model=Stored,
        tier=Tier.LOW,
        effect=Effect.WRITE,
        execute=store,
        preview=preview,
        facts={"note": str},
        irreversible="a test tool",
    )
]
