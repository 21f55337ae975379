"""A deliberately non-deterministic variant of AgentRun, for proving that replay catches one.

In its own module because the workflow sandbox re-imports the module that defines a workflow.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.agent_run import AgentRun
    from workflows.governed_run import GovernedRun


class GovernedRunWithAnExtraTimer(GovernedRun):
    async def _ask_model(self) -> Any:
        await workflow.sleep(timedelta(milliseconds=1))
        return await super()._ask_model()


@workflow.defn(name="AgentRun", sandboxed=False)
class AgentRunWithAnExtraTimer(AgentRun):
    """Today's AgentRun plus one new timer before each model call."""

    def __init__(self) -> None:
        self._run = GovernedRunWithAnExtraTimer()

    @workflow.run
    async def run(self, raw: Any, carried: Any = None) -> Any:
        return await super().run(raw, carried)
