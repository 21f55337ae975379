"""Kill switch: time from the switch to the moment no run can start a tool call any more.

N runs are started and left waiting for an approval of a write (in flight: registered with the
workspace's control workflow). The kill switch is thrown through the control workflow's `switch`
update, which answers once the change is committed to the control store. Every tool call reads the
store as it starts (a write at once, a read within `GATE_TTL_S`), so from that answer on no write
starts in any run, however many there are: the figure is the update's round trip. The bench then
approves every run's write and checks that none of them starts while the switch is on, then turns
the switch off and counts the held writes that run: every one of them, if the approvals held.

The runs are told of the switch too, so that their status shows it: that broadcast goes on after
the update has answered, and its figure (the last acknowledgement) is reported beside the first.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowHandle

from bench.common import airlock_worker, count_waiting, new_id
from contracts import names
from contracts.models import Status
from contracts.workspace_io import SwitchResult, WorkspaceView, control_workflow_id

# How long the cancelled runs have to end before the bench terminates them.
CANCEL_WAIT_S = 60.0
# How long the held writes have to run once the switch is off again.
RELEASE_WAIT_S = 180.0

# The approvals sent after the switch: how many at once, and how long each may take.
SIGNALS_IN_FLIGHT = 64
SIGNAL_RPC_TIMEOUT = timedelta(seconds=60)

WAIT = {"tool": "email.send", "args": {"to": "dana@example.com", "subject": "s", "body": "b"}}


async def measure(client: Client, runs: int) -> dict[str, Any]:
    async with airlock_worker(client, new_id("bench-kill")) as settings:
        handles = [
            await client.start_workflow(
                "AgentRun",
                {
                    "goal": "wait",
                    "workspace": "acme",
                    "requested_by": "u_alice",
                    "mode": "auto",
                    "model": {"provider": "scripted", "script": [WAIT]},
                },
                id=new_id("kill"),
                task_queue=settings.task_queue,
            )
            for _ in range(runs)
        ]
        control = client.get_workflow_handle(control_workflow_id("acme"))
        # In flight: every run has joined and waits for its approval. (The control workflow's
        # count of runs is no test: it still holds runs of earlier sections that have ended.)
        for _ in range(2400):
            if await count_waiting(client, settings.task_queue) >= runs:
                break
            await asyncio.sleep(0.05)
        pending = await asyncio.gather(*(_approval_id(h) for h in handles))
        sent = time.perf_counter()
        result = await control.execute_update(
            names.ControlMessages.SWITCH,
            {"switch": "kill_switch", "on": True, "by": "u_carol", "reason": "bench"},
            result_type=SwitchResult,
        )
        updated = time.perf_counter()
        # Proof that nothing starts: every run's write approved now, none runs while the switch holds.
        await _approve_all(handles, pending)
        approved = time.perf_counter()
        deadline = time.perf_counter() + 300
        while time.perf_counter() < deadline:
            view = await control.query(names.ControlMessages.STATE, result_type=WorkspaceView)
            if view.acknowledged >= runs:
                break
            await asyncio.sleep(0.01)
        seen = time.perf_counter()
        await asyncio.sleep(1.0)
        started_while_on = _sent_emails(settings.db)
        await control.execute_update(
            names.ControlMessages.SWITCH,
            {"switch": "kill_switch", "on": False, "by": "u_carol", "reason": "bench"},
            result_type=SwitchResult,
        )
        # The approvals were given while the switch held: with it off, every held write runs.
        released = time.perf_counter()
        ran_after_off = started_while_on
        while ran_after_off < runs and time.perf_counter() < released + RELEASE_WAIT_S:
            await asyncio.sleep(0.1)
            ran_after_off = _sent_emails(settings.db)
        released_s = time.perf_counter() - released
        for h in handles:
            await h.cancel()
        not_ended = await _ended_or_terminated(handles, CANCEL_WAIT_S)
    return {
        "runs": runs,
        "notified": result.runs_notified,
        "switch_update_ms": round((updated - sent) * 1000, 1),
        "approved_after_switch": len(pending),
        "approved_in_s": round(approved - updated, 3),
        "calls_started_while_on": started_while_on,
        "last_ack_after_s_control_clock": view.last_ack_after_s,
        "acknowledged": view.acknowledged,
        "all_acknowledged_wall_s": round(seen - sent, 3),
        "ran_after_switch_off": ran_after_off - started_while_on,
        "ran_after_switch_off_s": round(released_s, 3),
        "not_ended_on_cancel": not_ended,
    }


async def _ended_or_terminated(handles: list[WorkflowHandle[Any, Any]], timeout: float) -> int:
    """Waits for the cancelled runs to end, `timeout` seconds at most; terminates the ones that
    have not, so that a run stuck on cancellation (a workflow task failing in a loop) cannot hang
    the bench. Their count is a figure: it should be 0."""
    tasks = [asyncio.ensure_future(h.result()) for h in handles]
    await asyncio.wait(tasks, timeout=timeout)
    left = [h for h, t in zip(handles, tasks, strict=True) if not t.done()]
    for t in tasks:
        if t.done():
            t.exception()  # a cancelled run's result is an error: seen, and expected
        else:
            t.cancel()
    for h in left:
        await h.terminate("bench: did not end on cancel")
    return len(left)


async def _approve_all(handles: list[WorkflowHandle[Any, Any]], approval_ids: list[str]) -> None:
    """Every run's write approved, `SIGNALS_IN_FLIGHT` signals at a time: with a thousand runs
    being told of the switch meanwhile, a thousand signals sent at once outlast the client's
    default RPC timeout on a loaded server."""
    gate = asyncio.Semaphore(SIGNALS_IN_FLIGHT)

    async def approve(handle: WorkflowHandle[Any, Any], approval_id: str) -> None:
        async with gate:
            await handle.signal(
                names.RunMessages.APPROVE,
                {"approval_id": approval_id, "approver": "u_bob"},
                rpc_timeout=SIGNAL_RPC_TIMEOUT,
            )

    await asyncio.gather(*(approve(h, a) for h, a in zip(handles, approval_ids, strict=True)))


async def _approval_id(handle: WorkflowHandle[Any, Any]) -> str:
    for _ in range(600):
        status = await handle.query(names.RunMessages.STATUS, result_type=Status)
        if status.pending_approvals:
            return status.pending_approvals[0].approval_id
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{handle.id} never waited for approval")


def _sent_emails(db: str) -> int:
    from sqlalchemy import func, select

    from tools.backoffice.db import connect, emails

    with connect(db).connect() as conn:
        return int(conn.execute(select(func.count()).select_from(emails)).scalar_one())
