"""Tools that misbehave on purpose, for the fault suites. Never part of a shipped policy."""

from __future__ import annotations

import time
from collections import Counter

from pydantic import Field

from contracts.models import Effect, Tier
from tools.base import Tool, ToolArgs, ToolContext, ToolOutput

calls: Counter[str] = Counter()


class Probe(ToolArgs):
    key: str = Field(min_length=1)


class Pong(ToolOutput):
    key: str


def broken(ctx: ToolContext, args: Probe) -> Pong:
    calls["faults.broken"] += 1
    raise RuntimeError("upstream service unavailable")


def slow(ctx: ToolContext, args: Probe) -> Pong:
    calls["faults.slow"] += 1
    time.sleep(float(args.key))
    return Pong(key=args.key)


TOOLS = [
    Tool(
        name="faults.broken",
        description="Always fails.",
        input_model=Probe,
        output_model=Pong,
        tier=Tier.LOW,
        effect=Effect.READ,
        execute=broken,
    ),
    Tool(
        name="faults.slow",
        description="Sleeps `key` seconds.",
        input_model=Probe,
        output_model=Pong,
        tier=Tier.LOW,
        effect=Effect.READ,
        execute=slow,
    ),
]
