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
import tempfile
import time
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from airlock.models import Status, TimelineEntry
from airlock.settings import Settings
from bench.common import APPROVER, new_id, pending_approval, percentile, result_or_stuck, run_input
from worker import build_worker

TOOL_ACTIVITY = "tool.payments.create_refund"
# 1 USD each, so that many of them stay within what ORD-1002 has left to refund.
SMALL_REFUND = {
    "tool": "payments.create_refund",
    "args": {"order_id": "ORD-1002", "amount_usd": 1, "reason": "damaged"},
}


class ExecutionClock(Interceptor):
    """Records when each execution of the watched activity starts, per (workflow id, step)."""

    def __init__(self, activity_type: str) -> None:
        self.activity_type = activity_type
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

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next, self)


class _Inbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, clock: ExecutionClock) -> None:
        super().__init__(next)
        self.clock = clock

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        if info.activity_type == self.clock.activity_type:
            now = time.perf_counter()
            step = getattr(input.args[0], "step", None) if input.args else None
            key = (info.workflow_id, int(step) if step is not None else -1)
            self.clock.starts.setdefault(key, now)
            waiter = self.clock.waiters.pop(key, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(now)
        return await self.next.execute_activity(input)


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
            raise RuntimeError(f"no tool start within 30 s of the vote on {approval_id}: {await _why(handle)}") from None
    await result_or_stuck(handle)
    return latencies


async def _why(handle: Any) -> str:
    """What the run says about itself, for a stall that would otherwise be a bare timeout."""
    try:
        status = await handle.query("status", result_type=Status)
        report = f"state {status.state.value}, paused_by {status.paused_by}, last_error {status.last_error}, "
        report += f"pending {[p.approval_id for p in status.pending_approvals]}"
        timeline = await handle.query("timeline", result_type=list[TimelineEntry])
        return report + "; last timeline entries: " + "; ".join(f"{e.kind} {e.message or ''}" for e in timeline[-4:])
    except Exception as e:  # noqa: BLE001 - a diagnosis must not hide the stall it explains
        return f"(status unavailable: {e})"


async def measure(client: Client, samples: int) -> dict[str, Any]:
    clock = ExecutionClock(TOOL_ACTIVITY)
    out: dict[str, Any] = {"samples": samples}
    with tempfile.TemporaryDirectory(prefix="airlock-bench-") as tmp:
        settings = Settings(db=f"{tmp}/backoffice.db", task_queue=new_id("bench-lat"))
        async with build_worker(client, settings, extra_interceptors=[clock]):
            await _approve_all(client, settings.task_queue, clock, 2, "signal")  # warm-up
            for via in ("signal", "update"):
                ms = [1000 * x for x in await _approve_all(client, settings.task_queue, clock, samples, via)]
                out[via] = {"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "max_ms": max(ms)}
    return out
