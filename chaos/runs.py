"""Starting the fault suites' runs: scripted, in workspace acme, auto mode."""

from __future__ import annotations

import uuid
from typing import Any

from temporalio.client import Client, WorkflowHandle

from airlock.models import RunReport


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
