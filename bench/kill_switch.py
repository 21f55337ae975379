"""Kill switch: time from the switch to the last of N in-flight runs acknowledging it.

N runs are started and left waiting for an approval (in flight: registered with the workspace's
control workflow). The kill switch is thrown through the control workflow's `switch` update; the
control workflow signals every registered run, and each run acknowledges once it will start no
new tool call. Two figures: the control workflow's own clock (switch to last acknowledgement,
`last_ack_after_s`), and the driver's wall clock from sending the update to seeing all N
acknowledgements through the `state` query.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from temporalio.client import Client

from airlock.workspace_io import SwitchResult, WorkspaceView, control_workflow_id
from bench.common import airlock_worker, count_waiting, new_id

WAIT = {"tool": "email.send", "args": {"to": "dana@example.com", "subject": "s", "body": "b"}}


async def measure(client: Client, runs: int) -> dict[str, Any]:
    async with airlock_worker(client, new_id("bench-kill")) as settings:
        handles = [
            await client.start_workflow(
                "AgentRun",
                {"goal": "wait", "workspace": "acme", "requested_by": "u_alice", "mode": "auto",
                 "model": {"provider": "scripted", "script": [WAIT]}},
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
        sent = time.perf_counter()
        result = await control.execute_update(
            "switch", {"switch": "kill_switch", "on": True, "by": "u_carol", "reason": "bench"}, result_type=SwitchResult
        )
        updated = time.perf_counter()
        deadline = time.perf_counter() + 300
        while time.perf_counter() < deadline:
            view = await control.query("state", result_type=WorkspaceView)
            if view.acknowledged >= runs:
                break
            await asyncio.sleep(0.01)
        seen = time.perf_counter()
        await control.execute_update(
            "switch", {"switch": "kill_switch", "on": False, "by": "u_carol", "reason": "bench"}, result_type=SwitchResult
        )
        for h in handles:
            await h.cancel()
        await asyncio.gather(*(h.result() for h in handles), return_exceptions=True)
    return {
        "runs": runs,
        "notified": result.runs_notified,
        "switch_update_ms": round((updated - sent) * 1000, 1),
        "last_ack_after_s_control_clock": view.last_ack_after_s,
        "acknowledged": view.acknowledged,
        "all_acknowledged_wall_s": round(seen - sent, 3),
    }
