"""`AgentRun`: one governed agent run, as a durable Temporal workflow.

This class is the run's face to Temporal: its entry point and its handlers, each handing over to
`GovernedRun` (`workflows.governed_run`), which holds the run's state and steps. The sandbox
imports this module and defines this class afresh for every run, and Temporal then reads every
member of the class and its handlers' type hints; the smaller the module, the cheaper a run's
start.
"""

# No `from __future__ import annotations` here: the handlers' type hints are read for every run,
# and as strings each would be compiled again each time.
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from airlock.models import DecideResult, RunReport, Status, TimelineEntry
    from workflows.memory import RunMemory

# Not in the pass-through block: the worker's sandbox (`worker.SANDBOX`) passes it through by
# name, while Temporal's default sandbox, which the replay tests use, imports it inside.
from workflows.governed_run import GovernedRun


@workflow.defn(name="AgentRun")
class AgentRun:
    """The workflow Temporal runs: its entry point and its handlers, each handing over to the run."""

    def __init__(self) -> None:
        self._run = GovernedRun()

    @workflow.run
    async def run(self, raw: Any, carried: RunMemory | None = None) -> RunReport:
        return await self._run.run(raw, carried)

    @workflow.signal(name="approve")
    def approve(self, payload: Any) -> None:
        self._run.take_vote(payload, "approve", via="signal")

    @workflow.signal(name="deny")
    def deny(self, payload: Any) -> None:
        self._run.take_vote(payload, "deny", via="signal")

    @workflow.update(name="decide")
    def decide_update(self, payload: Any) -> DecideResult:
        return self._run.decide_update(payload)

    @workflow.signal(name="pause")
    def pause(self, payload: Any) -> None:
        self._run.pause_signal(payload, pausing=True)

    @workflow.signal(name="resume")
    def resume(self, payload: Any) -> None:
        self._run.pause_signal(payload, pausing=False)

    @workflow.signal(name="workspace_switch")
    def workspace_switch(self, payload: Any) -> None:
        self._run.workspace_switch(payload)

    @workflow.query(name="status")
    def status(self) -> Status:
        return self._run.status()

    @workflow.query(name="timeline")
    def timeline(self) -> list[TimelineEntry]:
        return self._run.timeline()
