"""`run.pin_context`: hands a starting run the policy and tool catalogue it will be judged by.

The result is written into the run's history, so the run keeps deciding by the policy it started
with even if the file changes underneath a long-running worker, and a replay decides the same way.
"""

from __future__ import annotations

from temporalio import activity

from airlock.activity_io import RunContext
from policy.model import Policy
from tools.registry import ToolRegistry


class RunContextActivities:
    def __init__(self, policy: Policy, registry: ToolRegistry, default_model: str) -> None:
        self._context = RunContext(
            policy=policy,
            policy_hash=policy.content_hash(),
            catalog=registry.catalog(),
            default_model=default_model,
        )

    @activity.defn(name="run.pin_context")
    def pin_context(self) -> RunContext:
        return self._context.model_copy(update={"workflow_id": activity.info().workflow_id})
