"""Figure 4: approval round trip, from the approve signal being sent to the tool starting.

The start is taken where the worker begins executing the tool's activity: an activity
interceptor installed in this process (through `build_worker`'s `extra_interceptors`) records
`time.perf_counter()` when `tool.payments.create_refund` starts, and the driver records the
same clock just before it sends the signal. No polling is involved in the measured interval
(the driver polls the `status` query only to learn the approval id, before the clock starts).

The same run is also approved through the `decide` update, the synchronous way to vote.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from temporalio.client import Client, WorkflowHandle

from bench.common import (
    APPROVER,
    ToolStartTap,
    airlock_worker,
    new_id,
    pending_approval,
    percentile,
    refund_activity,
    result_or_stuck,
    run_input,
)
from contracts.models import Status, TimelineEntry

# 1 USD each, so that many of them stay within what ORD-1002 has left to refund.
SMALL_REFUND = {
    "tool": "payments.create_refund",
    "args": {"order_id": "ORD-1002", "amount_usd": 1, "reason": "damaged"},
}


class ExecutionClock:
    """When each execution of the refund started, per (workflow id, step), on this process's
    `perf_counter`: the driver reads the same clock when it sends the vote."""

    def __init__(self) -> None:
        self.waiters: dict[tuple[str, int], asyncio.Future[float]] = {}
        self.starts: dict[tuple[str, int], float] = {}

    def expect(self, workflow_id: str, step: int) -> asyncio.Future[float]:
        key = (workflow_id, step)
        future = asyncio.get_running_loop().create_future()
        if key in self.starts:
            future.set_result(self.starts[key])
        else:
            self.waiters[key] = future
        return future

    def started(self, workflow_id: str, step: int) -> None:
        now = time.perf_counter()
        key = (workflow_id, step)
        self.starts.setdefault(key, now)
        waiter = self.waiters.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(now)


async def _approve_all(client: Client, task_queue: str, clock: ExecutionClock, samples: int, via: str) -> list[float]:
    handle = await client.start_workflow(
        "AgentRun", run_input([SMALL_REFUND] * samples), id=new_id(f"lat-{via}"), task_queue=task_queue
    )
    seen: set[str] = set()
    latencies: list[float] = []
    for _ in range(samples):
        approval_id = await pending_approval(handle, seen)
        step = int(approval_id.split("-")[1])  # apr-<step>-<index>-<hash>
        started = clock.expect(handle.id, step)
        vote = {"approval_id": approval_id, "approver": APPROVER, "comment": "ok"}
        sent = time.perf_counter()
        if via == "signal":
            await handle.signal("approve", vote)
        else:
            result = await handle.execute_update("decide", {**vote, "decision": "approve"})
            if not (result or {}).get("accepted"):
                raise RuntimeError(f"vote refused: {result}")
        try:
            latencies.append(await asyncio.wait_for(started, timeout=30) - sent)
        except TimeoutError:
            raise RuntimeError(
                f"no tool start within 30 s of the vote on {approval_id}: {await _why(handle)}"
            ) from None
    await result_or_stuck(handle)
    return latencies


async def _why(handle: WorkflowHandle[Any, Any]) -> str:
    """What the run says about itself, for a stall that would otherwise be a bare timeout."""
    try:
        status = await handle.query("status", result_type=Status)
        report = f"state {status.state.value}, paused_by {status.paused_by}, last_error {status.last_error}, "
        report += f"pending {[p.approval_id for p in status.pending_approvals]}"
        timeline = await handle.query("timeline", result_type=list[TimelineEntry])
        return report + "; last timeline entries: " + "; ".join(f"{e.kind} {e.message or ''}" for e in timeline[-4:])
    except Exception as e:
        return f"(status unavailable: {e})"


async def measure(client: Client, samples: int) -> dict[str, Any]:
    clock = ExecutionClock()
    out: dict[str, Any] = {"samples": samples}
    tap = ToolStartTap(refund_activity(), clock.started)
    async with airlock_worker(client, new_id("bench-lat"), extra_interceptors=[tap]) as settings:
        await _approve_all(client, settings.task_queue, clock, 2, "signal")  # warm-up
        for via in ("signal", "update"):
            ms = [1000 * x for x in await _approve_all(client, settings.task_queue, clock, samples, via)]
            out[via] = {"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "max_ms": max(ms)}
    return out
