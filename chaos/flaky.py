"""Flaky and hanging tools: transient failures, hangs past the timeout, and writes that commit
and then time out. Every run must end in an explicit state, with no duplicate side effect and a
bounded number of attempts.

The faults are decided by a hash of (idempotency key, attempt), so a run of the suite is
reproducible: 30% of attempts fail before doing anything, 5% hang past the activity's timeout,
5% commit and then time out before reporting back.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field
from sqlalchemy import func, select, update
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from chaos.runs import start_scripted
from contracts.models import FINAL_STATES, CallStatus, Effect, Tier
from runtime.settings import EXAMPLE_POLICY, Settings
from tools.backoffice.db import connect, customers, tool_calls
from tools.base import Tool, ToolArgs, ToolContext, ToolOutput
from worker import build_worker

HANG_S = 65.0  # past the 60 s start-to-close timeout of a write


class Note(ToolArgs):
    run: str = Field(min_length=1)


class Noted(ToolOutput):
    run: str


def _roll(key: str) -> float:
    digest = hashlib.sha256(f"{key}/{activity.info().attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


class Misbehave(Interceptor):
    """Hangs (5%) before the call, or lets it commit and then hangs (5%) before reporting back."""

    def __init__(self, hang_s: float = HANG_S) -> None:
        self.hang_s = hang_s

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        hang_s = self.hang_s

        class _Inbound(ActivityInboundInterceptor):
            async def execute_activity(self, input: ExecuteActivityInput) -> Any:
                if activity.info().activity_type != "tool.chaos.flaky_note":
                    return await self.next.execute_activity(input)
                roll = _roll(input.args[0].idempotency_key or "")
                if 0.30 <= roll < 0.35:
                    await asyncio.sleep(hang_s)
                result = await self.next.execute_activity(input)
                if 0.35 <= roll < 0.40:
                    await asyncio.sleep(hang_s)
                return result

        return _Inbound(next)


def flaky_note(ctx: ToolContext, args: Note) -> Noted:
    if _roll(ctx.idempotency_key or args.run) < 0.30:
        raise ConnectionError("transient: upstream refused the connection")
    ctx.conn.execute(update(customers).where(customers.c.id == "C-101").values(notes=customers.c.notes + "+"))
    return Noted(run=args.run)


TOOLS = [
    Tool(
        name="chaos.flaky_note",
        description="Appends a mark to C-101's notes; misbehaves on purpose.",
        input_model=Note,
        output_model=Noted,
        tier=Tier.LOW,
        effect=Effect.WRITE,
        execute=flaky_note,
        irreversible="a chaos mark",
    )
]


@dataclass
class FlakyResult:
    runs: int
    final: int
    executed: int
    failed_calls: int
    marks: int
    ledger_rows: int
    by_state: dict[str, int]

    def table(self) -> str:
        return "\n".join(
            [
                f"runs                     {self.runs}",
                f"runs in a final state    {self.final}  {self.by_state}",
                f"calls executed           {self.executed}",
                f"calls failed (explicit)  {self.failed_calls}",
                f"marks written / ledger   {self.marks} / {self.ledger_rows}",
                f"duplicate side effects   {self.marks - self.ledger_rows}",
            ]
        )


async def flaky_suite(
    client: Client, settings: Settings, runs: int, calls_per_run: int, hang_s: float = HANG_S
) -> FlakyResult:
    async with build_worker(client, settings, extra_interceptors=[Misbehave(hang_s)]):
        budget = {"max_steps": calls_per_run + 1, "max_tool_calls": calls_per_run, "max_wall_clock_s": 3600}
        handles = [
            await start_scripted(
                client,
                settings.task_queue,
                f"flaky-{r}",
                [{"tool": "chaos.flaky_note", "args": {"run": f"{r}-{c}"}} for c in range(calls_per_run)],
                budget=budget,
            )
            for r in range(runs)
        ]
        reports = [await h.result() for h in handles]
    with connect(settings.db).connect() as conn:
        notes = conn.execute(select(customers.c.notes).where(customers.c.id == "C-101")).scalar_one()
        ledger = conn.execute(
            select(func.count()).select_from(tool_calls).where(tool_calls.c.tool == "chaos.flaky_note")
        ).scalar_one()
    by_state = dict(Counter(r.state.value for r in reports))
    return FlakyResult(
        runs=runs,
        final=sum(r.state in FINAL_STATES for r in reports),
        executed=sum(1 for r in reports for c in r.calls if c.status is CallStatus.EXECUTED),
        failed_calls=sum(1 for r in reports for c in r.calls if c.status is CallStatus.FAILED),
        marks=notes.count("+"),
        ledger_rows=ledger,
        by_state=by_state,
    )


def policy_with_chaos_tool(text: str) -> str:
    return text.replace("      - kb.search\n", "      - kb.search\n      - chaos.flaky_note\n", 1)


def chaos_settings(settings: Settings, directory: Path) -> Settings:
    """`settings` with chaos.flaky_note loaded, and the shipped policy granting it, written into
    `directory`."""
    policy = directory / "policy.yaml"
    policy.write_text(policy_with_chaos_tool(EXAMPLE_POLICY.read_text()))
    return settings.model_copy(update={"policy_path": policy, "tool_modules": "tools.backoffice,chaos.flaky"})
