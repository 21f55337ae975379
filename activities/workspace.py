"""`workspace.register`: a starting run joins its workspace's control workflow (starting it on
first use, with a signal) and reads the switches in force."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.common import WorkflowIDConflictPolicy

from airlock.workspace_io import RegisterRequest, Switches, control_workflow_id


class WorkspaceActivities:
    def __init__(self, client: Client, control_task_queue: str | None = None) -> None:
        self._client = client
        self._task_queue = control_task_queue

    @activity.defn(name="workspace.register")
    async def register(self, request: RegisterRequest) -> Switches:
        handle = await self._client.start_workflow(
            "WorkspaceControl",
            request.workspace,
            id=control_workflow_id(request.workspace),
            task_queue=self._task_queue or activity.info().task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal="register",
            start_signal_args=[request],
        )
        # The query sees the registration: it is answered after the signal is applied.
        for attempt in range(50):
            try:
                return await handle.query("switches", result_type=Switches)
            except WorkflowQueryFailedError:
                # A control workflow on its first task has not pinned its policy yet.
                await asyncio.sleep(min(0.05 * (attempt + 1), 0.5))
        return await handle.query("switches", result_type=Switches)

    @activity.defn(name="workspace.live_runs")
    async def live_runs(self, workspace: str) -> list[str]:
        query = f'WorkflowType="AgentRun" AND ExecutionStatus="Running" AND AirlockWorkspace="{workspace}"'
        return [w.id async for w in self._client.list_workflows(query)]
