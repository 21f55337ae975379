"""Starting the fault suites' runs (scripted, in workspace acme, auto mode) and waiting on them."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

from temporalio.client import Client, WorkflowHandle, WorkflowQueryFailedError

from contracts.models import RunReport, Status


async def start_scripted(
    client: Client, task_queue: str, prefix: str, script: list[dict[str, Any]], **extra: Any
) -> WorkflowHandle[Any, RunReport]:
    return await client.start_workflow(
        "AgentRun",
        {
            "goal": "chaos",
            "workspace": "acme",
            "requested_by": "u_alice",
            "mode": "auto",
            "model": {"provider": "scripted", "script": script},
            **extra,
        },
        id=f"{prefix}-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
        result_type=RunReport,
    )


async def pending_approval_id(handle: WorkflowHandle[Any, Any], tries: int = 200) -> str:
    """The id of the first approval the run waits for, once it asks for one."""
    for _ in range(tries):
        with contextlib.suppress(WorkflowQueryFailedError):  # the run is still joining its workspace
            status = await handle.query("status", result_type=Status)
            if status.pending_approvals:
                return status.pending_approvals[0].approval_id
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{handle.id} never asked for approval")
