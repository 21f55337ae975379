"""`WorkspaceControl`: one long-lived workflow per workspace (id `workspace:NAME`) that holds its
switches and tells every live run of the workspace when they change.

Runs register when they start (a signal-with-start, which also starts this workflow on first use)
and read the current switches with a query. A switch change is an update: only a person with the
admin role may make it; refusals are answered and recorded. Every registered run is then
signalled, and acknowledges; from the acknowledgement on, that run starts no new tool call
(kill switch) or refuses every write and external call with reason `safe_mode` (safe mode).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, Field, ValidationError

    from airlock.activity_io import RunContext
    from airlock.workspace_io import (
        Ack,
        RegisterRequest,
        SwitchRequest,
        SwitchResult,
        Switches,
        WorkspaceView,
    )
    from tools.runner import describe_validation_error

ADMIN_ROLE = "admin"
# Continue as new before the history grows large; registrations and acks are small but endless.
EVENTS_PER_HISTORY = 5_000
RECENT = timedelta(minutes=10)
REFUSALS_KEPT = 50


class ControlState(BaseModel):
    workspace: str
    context: RunContext
    switches: Switches = Field(default_factory=Switches)
    switched_at: datetime | None = None
    # run id -> the generation it has acknowledged, and when it registered
    runs: dict[str, int] = Field(default_factory=dict)
    registered_at: dict[str, datetime] = Field(default_factory=dict)
    last_ack_after_s: float | None = None
    refused: list[str] = Field(default_factory=list)
    events_per_history: int = EVENTS_PER_HISTORY


@workflow.defn(name="WorkspaceControl")
class WorkspaceControl:
    def __init__(self) -> None:
        self._s: ControlState | None = None
        self._started = asyncio.Event()

    @workflow.run
    async def run(self, workspace: str, carried: ControlState | None = None) -> None:
        if carried is None:
            context: RunContext = await workflow.execute_local_activity(
                "run.pin_context",
                result_type=RunContext,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=5),
            )
            if workspace not in context.policy.workspaces:
                raise ApplicationError(f"workspace {workspace!r} is not in the policy", non_retryable=True)
            carried = ControlState(workspace=workspace, context=context)
        self._s = carried
        self._started.set()
        await workflow.wait_condition(
            lambda: workflow.info().get_current_history_length() > carried.events_per_history
            or workflow.info().is_continue_as_new_suggested()
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self._forget_finished_runs()
        workflow.continue_as_new(args=[workspace, self._s])

    async def _forget_finished_runs(self) -> None:
        """Runs do not unregister (it would cost each run two events and this workflow a task);
        before a checkpoint, runs that visibility no longer lists as running are forgotten.
        Recent registrations are kept whatever visibility says: it lags behind."""
        s = self._s
        assert s is not None
        live: list[str] = await workflow.execute_activity(
            "workspace.live_runs",
            s.workspace,
            result_type=list[str],
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
        keep = set(live)
        recent = workflow.now() - RECENT
        for run_id in list(s.runs):
            if run_id not in keep and s.registered_at.get(run_id, recent) < recent:
                s.runs.pop(run_id, None)
                s.registered_at.pop(run_id, None)

    async def _state(self) -> ControlState:
        await self._started.wait()
        assert self._s is not None
        return self._s

    @workflow.signal(name="register")
    async def register(self, payload: Any) -> None:
        # A signal, not an update: a burst of run starts must never hit the server's cap on
        # concurrent in-flight updates. The run reads the switches with the `switches` query.
        try:
            request = RegisterRequest.model_validate(payload)
        except ValidationError:
            return
        s = await self._state()
        # A run that joins after a switch reads it (the `switches` query) before its first tool
        # call: joining is its acknowledgement.
        s.runs[request.run_id] = s.switches.generation
        s.registered_at[request.run_id] = workflow.now()

    @workflow.query(name="switches")
    def current_switches(self) -> Switches:
        if self._s is None:
            raise ApplicationError("the workspace control is starting; ask again in a moment")
        return self._s.switches

    @workflow.signal(name="ack")
    def ack(self, payload: Any) -> None:
        try:
            ack = Ack.model_validate(payload)
        except ValidationError:
            return
        s = self._s
        if s is None or ack.run_id not in s.runs or ack.generation != s.switches.generation:
            return
        s.runs[ack.run_id] = ack.generation
        if s.switched_at is not None:
            s.last_ack_after_s = (workflow.now() - s.switched_at).total_seconds()

    @workflow.update(name="switch")
    async def switch(self, payload: Any) -> SwitchResult:
        s = await self._state()
        try:
            request = SwitchRequest.model_validate(payload)
        except ValidationError as e:
            return self._refuse(s, "malformed payload: " + describe_validation_error(e))
        roles = s.context.policy.roles_of(request.by)
        if ADMIN_ROLE not in roles:
            return self._refuse(s, f"{request.by} lacks the {ADMIN_ROLE} role that workspace switches need")
        current = s.switches
        paused = request.on if request.switch == "kill_switch" else current.paused
        safe = request.on if request.switch == "safe_mode" else current.safe_mode
        s.switches = Switches(
            generation=current.generation + 1, paused=paused, safe_mode=safe, by=request.by, reason=request.reason
        )
        s.switched_at = workflow.now()
        s.last_ack_after_s = None
        notified = await self._broadcast(s)
        return SwitchResult(accepted=True, generation=s.switches.generation, runs_notified=notified)

    async def _broadcast(self, s: ControlState) -> int:
        run_ids = list(s.runs)
        payload = s.switches.model_dump(mode="json")
        results = await asyncio.gather(
            *(workflow.get_external_workflow_handle(r).signal("workspace_switch", payload) for r in run_ids),
            return_exceptions=True,
        )
        for run_id, result in zip(run_ids, results, strict=True):
            if isinstance(result, BaseException):
                # The run has ended: forget it.
                s.runs.pop(run_id, None)
                s.registered_at.pop(run_id, None)
        return sum(not isinstance(r, BaseException) for r in results)

    def _refuse(self, s: ControlState, reason: str) -> SwitchResult:
        s.refused = [*s.refused[-(REFUSALS_KEPT - 1) :], f"{workflow.now().isoformat()} {reason}"]
        return SwitchResult(accepted=False, reason=reason)

    @workflow.query(name="state")
    def state(self) -> WorkspaceView:
        if self._s is None:
            raise ApplicationError("the workspace control is starting; ask again in a moment")
        s = self._s
        generation = s.switches.generation
        return WorkspaceView(
            workspace=s.workspace,
            switches=s.switches,
            switched_at=s.switched_at,
            runs=len(s.runs),
            acknowledged=sum(1 for g in s.runs.values() if g == generation) if generation else 0,
            last_ack_after_s=s.last_ack_after_s,
            refused=s.refused,
        )
