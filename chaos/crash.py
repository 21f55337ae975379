"""Crash consistency: workers killed with SIGKILL mid-run lose nothing and repeat nothing.

`crash_suite`: each round starts a worker that kills itself right after its k-th committed write
(k random), then a healthy worker finishes whatever is left. Afterwards every run must be final,
every executed write must appear exactly once in the database, and at least one write must have
been re-executed and answered from the idempotency ledger: proof the crash window was really hit.

`crash_windows`: one run per point of a write's life (after its preparation, after the decision,
after its commit and before its report, during its approval wait), each a refund that uses most
of what is left refundable, so that its own commit changes the facts the policy reads: decided
again after the commit, it would be denied. Each run must end with its refund executed once,
recorded with the diff it really made, exported as a side effect, and undone completely.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, func, insert, select
from temporalio.client import Client
from temporalio.service import RPCError

from chaos.runs import pending_approval_id, start_scripted
from contracts.audit import RunFacts, events_for
from contracts.models import FINAL_STATES, CallStatus, RunReport
from contracts.undo_io import UndoReport
from recorder.flight_recorder import record_of
from runtime.settings import Settings
from tools.backoffice.db import connect, create_schema, orders, refunds, tool_calls, usd
from worker import build_worker
from workflows.governed_run import LEDGER_RULE


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
    # Of those, the calls whose preparation found the write (its task lost after the commit).
    prepared_from_ledger: int = 0

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
                f"  found by the preparation   {self.prepared_from_ledger}",
            ]
        )


def script(i: int) -> list[dict[str, Any]]:
    return [
        {"tool": "payments.create_refund", "args": {"order_id": "ORD-1002", "amount_usd": 1, "reason": f"r{i}"}},
        {"tool": "crm.update_customer", "args": {"customer_id": "C-101", "changes": {"notes": f"run {i}"}}},
        {
            "tool": "tickets.update_ticket",
            "args": {"ticket_id": "T-17", "changes": {"priority": ["low", "high"][i % 2]}},
        },
    ]


def worker_env(client: Client, settings: Settings) -> dict[str, str]:
    """The environment of a worker subprocess serving `settings` on `client`'s server."""
    return {
        **os.environ,
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": client.namespace,
        "AIRLOCK_TASK_QUEUE": settings.task_queue,
        "AIRLOCK_DB": settings.db,
        "AIRLOCK_CONTROL_DB": settings.control_db,
        "AIRLOCK_LOG_LEVEL": "ERROR",
        **({"AIRLOCK_CONTROL_TASK_QUEUE": settings.control_task_queue} if settings.control_task_queue else {}),
    }


async def crash_suite(client: Client, settings: Settings, runs: int, rounds: int, seed: int = 7) -> CrashResult:
    rng = random.Random(seed)
    env = worker_env(client, settings)
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
    prepared_from_ledger = sum(1 for r in reports for c in r.calls if c.decision and c.decision.rule == LEDGER_RULE)
    engine = connect(settings.db)
    with engine.connect() as conn:
        refund_rows = conn.execute(select(func.count()).select_from(refunds)).scalar_one()
        ledger_rows = conn.execute(select(func.count()).select_from(tool_calls)).scalar_one()
    refunds_expected = sum(
        1 for r in reports for c in r.calls if c.tool == "payments.create_refund" and c.status is CallStatus.EXECUTED
    )
    return CrashResult(
        runs=runs,
        final=sum(r.state in FINAL_STATES for r in reports),
        crashes=crashes,
        executed_writes=executed,
        refund_rows=refund_rows,
        refunds_expected=refunds_expected,
        ledger_rows=ledger_rows,
        answered_from_ledger=answered,
        prepared_from_ledger=prepared_from_ledger,
    )


# ---- the crash windows of one write ---------------------------------------------------------

# Each window's order: 180.00 USD, 100.00 of it refunded before the run, so 80.00 is left. The
# run's refund uses most of that; once it committed, a new preview says it no longer fits.
ORDER_CENTS = 18_000
EARLIER_CENTS = 10_000
# (where the worker dies, the refund): 50 runs on its own, above 50 needs an approver.
WINDOWS: dict[str, tuple[str, int]] = {
    "after prepare": ("after-prepare", 50),
    "after the decision": ("after-decision", 50),
    "after commit, before report": ("after-commit", 50),
    "during the approval wait": ("approval-wait", 70),
    "after commit of an approved write": ("after-commit", 70),
}
APPROVER = "u_bob"
# A short workflow task timeout: the task a killed worker held is handed on in seconds.
TASK_TIMEOUT = timedelta(seconds=2)


@dataclass
class WindowResult:
    window: str
    crashed: bool
    state: str
    status: str
    rule: str
    diff: str
    expected_diff: str
    refund_rows: int
    side_effects: int
    undo: str
    refundable_after_undo: Decimal

    @property
    def holds(self) -> bool:
        return (
            self.crashed
            and self.state == "completed"
            and self.status == CallStatus.EXECUTED.value
            and self.diff == self.expected_diff
            and self.refund_rows == 1
            and self.side_effects == 1
            and self.undo == "completed"
            and self.refundable_after_undo == usd(ORDER_CENTS - EARLIER_CENTS)
        )

    def line(self) -> str:
        return (
            f"{self.window:<34} {'killed' if self.crashed else 'NOT KILLED':<10} {self.status:<9} "
            f"{self.rule:<26} {self.diff:<42} rows {self.refund_rows}  effects {self.side_effects}  "
            f"undo {self.undo:<10} {'ok' if self.holds else 'FAIL'}"
        )


def window_table(results: list[WindowResult]) -> str:
    return "\n".join(r.line() for r in results)


def _seed_order(engine: Engine, order_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(orders).values(
                id=order_id, customer_id="C-100", total_cents=ORDER_CENTS, status="delivered", items="1x kettle"
            )
        )
        conn.execute(
            insert(refunds).values(
                id=f"RF-{order_id}",
                order_id=order_id,
                amount_cents=EARLIER_CENTS,
                reason="earlier",
                status="issued",
                created_by="setup",
            )
        )


async def _wait(proc: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        return await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout=timeout)
    except TimeoutError:
        proc.kill()
        return proc.wait()


async def _undo(client: Client, settings: Settings, run_id: str) -> str:
    """Undoes the run (the void needs an approver, who approves it); the undo's final state."""
    handle = await client.start_workflow(
        "UndoRun", {"run_id": run_id}, id=f"undo-{run_id}", task_queue=settings.task_queue, result_type=UndoReport
    )
    child = client.get_workflow_handle(f"undo-{run_id}.compensations")
    for _ in range(600):  # the compensation run starts once the undo has planned
        with contextlib.suppress(RPCError):
            await child.describe()
            break
        await asyncio.sleep(0.05)
    await child.signal("approve", {"approval_id": await pending_approval_id(child), "approver": APPROVER})
    report = await asyncio.wait_for(handle.result(), timeout=120)
    return report.state


async def crash_window(client: Client, settings: Settings, window: str, order_id: str) -> WindowResult:
    point, amount = WINDOWS[window]
    engine = connect(settings.db)
    _seed_order(engine, order_id)
    handle = await client.start_workflow(
        "AgentRun",
        {
            "goal": f"crash {window}",
            "workspace": "acme",
            "requested_by": "u_alice",
            "mode": "auto",
            "model": {
                "provider": "scripted",
                "script": [
                    {
                        "tool": "payments.create_refund",
                        "args": {"order_id": order_id, "amount_usd": amount, "reason": "damaged"},
                    }
                ],
            },
        },
        id=f"window-{point}-{uuid.uuid4().hex[:8]}",
        task_queue=settings.task_queue,
        result_type=RunReport,
        task_timeout=TASK_TIMEOUT,
    )
    hook = [] if point == "approval-wait" else ["--die-at", point]
    proc = subprocess.Popen(
        [sys.executable, "-m", "chaos.crashing_worker", *hook],
        env=worker_env(client, settings),
        stdout=subprocess.DEVNULL,
    )
    try:
        if amount > 50:
            approval_id = await pending_approval_id(handle, tries=1200)
            if point == "approval-wait":
                # Killed while the run waits for a person: the vote reaches the server alone.
                os.kill(proc.pid, signal.SIGKILL)
            await handle.signal("approve", {"approval_id": approval_id, "approver": APPROVER})
        code = await _wait(proc, timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    async with build_worker(client, settings):
        report = await asyncio.wait_for(handle.result(), timeout=120)
        with engine.connect() as conn:
            rows = conn.execute(
                select(func.count())
                .select_from(refunds)
                .where(refunds.c.order_id == order_id, refunds.c.created_by == handle.id)
            ).scalar_one()
        rec = await record_of(client, handle.id, undo_links=False)
        m = rec.memory
        facts = RunFacts(
            run_id=handle.id,
            workspace=m.input.workspace,
            agent=m.input.agent,
            requested_by=m.input.requested_by,
            policy_hash=m.context.policy_hash,
        )
        effects = sum(
            1
            for seq, entry in enumerate(m.timeline)
            for e in events_for(seq, entry, facts, m.calls)
            if e.type == "side_effect"
        )
        undo = await _undo(client, settings, handle.id) if report.undo else "nothing to undo"
    with engine.connect() as conn:
        refunded = conn.execute(
            select(func.coalesce(func.sum(refunds.c.amount_cents), 0)).where(
                refunds.c.order_id == order_id, refunds.c.status == "issued"
            )
        ).scalar_one()
    call = report.calls[0] if report.calls else None
    before = usd(EARLIER_CENTS)
    return WindowResult(
        window=window,
        crashed=code == -signal.SIGKILL,
        state=report.state.value,
        status=call.status.value if call else "none",
        rule=call.decision.rule if call and call.decision else "none",
        diff="; ".join(str(d) for d in call.diff) if call else "",
        expected_diff=f"orders[{order_id}].refunded_usd: {before} -> {before + amount}",
        refund_rows=rows,
        side_effects=effects,
        undo=undo,
        refundable_after_undo=usd(ORDER_CENTS - refunded),
    )


async def crash_windows(client: Client, settings: Settings, windows: list[str] | None = None) -> list[WindowResult]:
    create_schema(connect(settings.db))
    tag = uuid.uuid4().hex[:6].upper()
    return [
        await crash_window(client, settings, window, f"ORD-W{i}-{tag}")
        for i, window in enumerate(windows or list(WINDOWS))
    ]
