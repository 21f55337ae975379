"""A run's start: it pins the policy and tool catalogue it will be judged by, and joins its
workspace's control plane.

`run.start` does both in one local activity, one marker event: the pinned context is written into
the run's history, so the run keeps deciding by the policy it started with even if the file
changes underneath a long-running worker, and a replay decides the same way. It joins the
workspace (`workspace.join`) only when the policy lets the run start and sets no concurrency cap:
under a cap, admission may wait on the control workflow, and the run waits for it in a full
activity (`workspace.register`) that does not hold its workflow task. `run.pin_context` alone
serves the control workflow, and runs started before `run.start`.
"""

from __future__ import annotations

from temporalio import activity

from activities.workspace import WorkspaceActivities
from contracts import names
from contracts.activity_io import RunContext, Started
from contracts.policy import Policy
from contracts.workspace_io import RegisterRequest
from policy.engine import may_start
from tools.registry import ToolRegistry


class RunContextActivities:
    def __init__(
        self,
        policy: Policy,
        registry: ToolRegistry,
        default_model: str,
        control_store: bool = True,
        control_events_per_history: int | None = None,
    ) -> None:
        self._context = RunContext(
            policy=policy,
            policy_hash=policy.content_hash(),
            catalog=registry.catalog(),
            default_model=default_model,
            control_store=control_store,
            control_events_per_history=control_events_per_history,
        )

    def pinned(self, workflow_id: str | None) -> RunContext:
        # Every caller is an activity of a run: its workflow id is always set.
        return self._context.model_copy(update={"workflow_id": workflow_id or ""})

    @activity.defn(name=names.RUN_PIN_CONTEXT)
    def pin_context(self) -> RunContext:
        return self.pinned(activity.info().workflow_id)


class RunStartActivities:
    def __init__(self, context: RunContextActivities, workspace: WorkspaceActivities) -> None:
        self._context = context
        self._workspace = workspace

    @activity.defn(name=names.RUN_START)
    async def start(self, registration: RegisterRequest) -> Started:
        """`registration` as the run would send it without a cap: it is sent only when the
        policy pinned here lets the run start and caps nothing."""
        context = self._context.pinned(activity.info().workflow_id)
        policy = context.policy
        if (
            may_start(policy, registration.workspace, registration.agent, registration.requested_by)
            or policy.workspaces[registration.workspace].limits.max_concurrent_runs is not None
        ):
            return Started(context=context)
        return Started(context=context, admission=await self._workspace.join(registration))
