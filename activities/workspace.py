"""The run's side of the workspace control plane.

`workspace.join`: a starting run joins its workspace's control workflow (starting it on first use,
with a signal) and learns its admission: the switches in force, and under a concurrency cap
whether it may run at all. `workspace.reserve`: a run holds the estimated cost of its next paid
model call against the workspace's daily spend cap.

Without a concurrency cap the join costs the control workflow one signal and no reply: the run
reads the switches from the control workflow's memo first and says which generation it read; the
control workflow, handling registrations and switches one at a time, tells it of any newer one.
Under a cap, admission is the control workflow's decision, read back with the `admission` query.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle, WorkflowQueryFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from airlock.workspace_io import (
    SWITCHES_MEMO,
    Admission,
    RegisterRequest,
    ReserveRequest,
    ReserveResult,
    Switches,
    control_workflow_id,
    registration_key,
)


class WorkspaceActivities:
    def __init__(self, client: Client, control_task_queue: str | None = None) -> None:
        self._client = client
        self._task_queue = control_task_queue

    @activity.defn(name="workspace.join")
    async def join(self, request: RegisterRequest) -> Admission:
        if request.max_concurrent_runs is not None:
            return await self._admission(await self._register(request), request)
        switches = await self._published_switches(request.workspace)
        await self._register(request.model_copy(update={"read_generation": switches.generation}))
        return Admission(**switches.model_dump())

    @activity.defn(name="workspace.register")
    async def register(self, request: RegisterRequest) -> Admission:
        """The join of runs started before `workspace.join`, which ran it as a full activity and
        always read the admission back."""
        return await self._admission(await self._register(request), request)

    async def _register(self, request: RegisterRequest) -> WorkflowHandle[Any, Any]:
        return await self._client.start_workflow(
            "WorkspaceControl",
            request.workspace,
            id=control_workflow_id(request.workspace),
            task_queue=self._task_queue or activity.info().task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal="register",
            start_signal_args=[request],
        )

    async def _published_switches(self, workspace: str) -> Switches:
        """The switches in the control workflow's memo; none thrown yet if it has not started, has
        ended (a new one starts from its switches off), or has never thrown one."""
        try:
            description = await self._client.get_workflow_handle(control_workflow_id(workspace)).describe()
        except RPCError as e:
            if e.status is RPCStatusCode.NOT_FOUND:
                return Switches()
            raise
        if description.status is not WorkflowExecutionStatus.RUNNING:
            return Switches()
        switches: Switches = await description.memo_value(SWITCHES_MEMO, Switches(), type_hint=Switches)
        return switches

    async def _admission(self, handle: WorkflowHandle[Any, Any], request: RegisterRequest) -> Admission:
        key = registration_key(request.run_id, request.chain_run_id)
        # Asked until answered: a control workflow on its first task has not pinned its policy
        # yet; an admission under a cap may wait on a visibility check; a queue whose worker has
        # only just started polling is refused ("no poller seen"); a busy workflow may not buffer
        # another query for a moment. The last try raises whatever it meets.
        for attempt in range(50):
            try:
                return await handle.query("admission", key, result_type=Admission)
            except WorkflowQueryFailedError:
                pass
            except RPCError as e:
                if e.status not in (RPCStatusCode.FAILED_PRECONDITION, RPCStatusCode.RESOURCE_EXHAUSTED):
                    raise
            await asyncio.sleep(min(0.05 * (attempt + 1), 0.5))
        return await handle.query("admission", key, result_type=Admission)

    @activity.defn(name="workspace.reserve")
    async def reserve(self, request: ReserveRequest) -> ReserveResult:
        # Retried by the activity's policy when refused as not ready or over the server's limit
        # of in-flight updates; a retry after the update was applied is granted again, held once.
        return await self._client.get_workflow_handle(control_workflow_id(request.workspace)).execute_update(
            "reserve", request, result_type=ReserveResult
        )

    @activity.defn(name="workspace.live_runs")
    async def live_runs(self, workspace: str) -> list[str]:
        query = f'WorkflowType="AgentRun" AND ExecutionStatus="Running" AND AirlockWorkspace="{workspace}"'
        return [w.id async for w in self._client.list_workflows(query)]
