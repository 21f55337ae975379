"""`workspace.register`: a starting run joins its workspace's control workflow (starting it on
first use) and learns the switches in force."""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy

from airlock.workspace_io import RegisterRequest, Switches, control_workflow_id


class WorkspaceActivities:
    def __init__(self, client: Client, control_task_queue: str | None = None) -> None:
        self._client = client
        self._task_queue = control_task_queue

    @activity.defn(name="workspace.register")
    async def register(self, request: RegisterRequest) -> Switches:
        start = WithStartWorkflowOperation(
            "WorkspaceControl",
            request.workspace,
            id=control_workflow_id(request.workspace),
            task_queue=self._task_queue or activity.info().task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        return await self._client.execute_update_with_start_workflow(
            "register", request, start_workflow_operation=start, result_type=Switches
        )
