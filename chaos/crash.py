"""Crash consistency: workers killed with SIGKILL mid-run lose nothing and repeat nothing.

Each round starts a worker that kills itself right after its k-th committed write (k random),
then a healthy worker finishes whatever is left. Afterwards every run must be final, every
executed write must appear exactly once in the database, and at least one write must have been
re-executed and answered from the idempotency ledger: proof the crash window was really hit.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from temporalio.client import Client

from airlock.models import FINAL_STATES, CallStatus
from airlock.recorder import record_of
from airlock.settings import Settings
from chaos.runs import start_scripted
from tools.backoffice.db import connect, refunds, tool_calls
from worker import build_worker


@dataclass
class CrashResult:
    runs: int
    final: int
    crashes: int
    executed_writes: int
    refund_rows: int
    refunds_expected: int
    ledger_rows: int
    answered_from_ledger: int

    @property
    def duplicates(self) -> int:
        return self.refund_rows - self.refunds_expected

    def table(self) -> str:
        return "\n".join(
            [
                f"runs                         {self.runs}",
                f"runs in a final state        {self.final}",
                f"worker crashes (SIGKILL)     {self.crashes}",
                f"writes executed (reports)    {self.executed_writes}",
                f"ledger rows                  {self.ledger_rows}",
                f"refund rows / expected       {self.refund_rows} / {self.refunds_expected}",
                f"duplicate side effects       {self.duplicates}",
                f"re-executed, from ledger     {self.answered_from_ledger}",
            ]
        )


def script(i: int) -> list[dict[str, Any]]:
    return [
        {"tool": "payments.create_refund", "args": {"order_id": "ORD-1002", "amount_usd": 1, "reason": f"r{i}"}},
        {"tool": "crm.update_customer", "args": {"customer_id": "C-101", "changes": {"notes": f"run {i}"}}},
        {"tool": "tickets.update_ticket", "args": {"ticket_id": "T-17", "changes": {"priority": ["low", "high"][i % 2]}}},
    ]


async def crash_suite(client: Client, settings: Settings, runs: int, rounds: int, seed: int = 7) -> CrashResult:
    rng = random.Random(seed)
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": client.namespace,
        "AIRLOCK_TASK_QUEUE": settings.task_queue,
        "AIRLOCK_DB": settings.db,
        "AIRLOCK_CONTROL_DB": settings.control_db,
        "AIRLOCK_LOG_LEVEL": "ERROR",
        **({"AIRLOCK_CONTROL_TASK_QUEUE": settings.control_task_queue} if settings.control_task_queue else {}),
    }
    handles = [await start_scripted(client, settings.task_queue, f"crash-{i}", script(i)) for i in range(runs)]
    crashes = 0
    for _ in range(rounds):
        k = rng.randint(1, 3)
        proc = subprocess.Popen(
            [sys.executable, "-m", "chaos.crashing_worker", "--die-after-writes", str(k)],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        try:
            code = await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout=120)
        except TimeoutError:
            proc.kill()
            code = proc.wait()
        crashes += code == -9
    async with build_worker(client, settings):
        reports = [await asyncio.wait_for(h.result(), timeout=300) for h in handles]
    answered = 0
    for h in handles:
        rec = await record_of(client, h.id)
        answered += sum(1 for e in rec.memory.timeline if e.kind == "tool_result" and e.outcome == "deduplicated")
    executed = sum(1 for r in reports for c in r.calls if c.status is CallStatus.EXECUTED)
    engine = connect(settings.db)
    with engine.connect() as conn:
        refund_rows = conn.execute(select(func.count()).select_from(refunds)).scalar_one()
        ledger_rows = conn.execute(select(func.count()).select_from(tool_calls)).scalar_one()
    refunds_expected = sum(1 for r in reports for c in r.calls if c.tool == "payments.create_refund" and c.status is CallStatus.EXECUTED)
    return CrashResult(
        runs=runs,
        final=sum(r.state in FINAL_STATES for r in reports),
        crashes=crashes,
        executed_writes=executed,
        refund_rows=refund_rows,
        refunds_expected=refunds_expected,
        ledger_rows=ledger_rows,
        answered_from_ledger=answered,
    )
