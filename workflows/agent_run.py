"""`AgentRun`: one governed agent run, as a durable Temporal workflow.

This class is the run's face to Temporal: its entry point and its handlers, each handing over to
`GovernedRun` (`workflows.governed_run`), which holds the run's state and steps. The sandbox
imports this module and defines this class afresh for every run, and Temporal then reads every
member of the class and its handlers' type hints; the smaller the module, the cheaper a run's
start.

Every entry point takes its arguments raw (`*args: RawValue`, or a dynamic handler) and decodes them
with `workflows.entry`: a message sent with no argument, two, or in an encoding Airlock does not
read is refused and recorded, never a workflow task that fails (and is retried) forever. A signal
of a name the run does not know is recorded as refused with its name.
"""

# No `from __future__ import annotations` here: the handlers' type hints are read for every run,
# and as strings each would be compiled again each time.
from collections.abc import Sequence

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from contracts import errors, names
    from contracts.models import DecideResult, RunReport, Status, TimelineEntry
    from workflows.entry import Refusal, bounded, single, start_args
    from workflows.memory import RunMemory, RunSnapshot

# Not in the pass-through block: the worker's sandbox (`worker.SANDBOX`) passes it through by
# name, while Temporal's default sandbox, which the replay tests use, imports it inside.
from workflows.governed_run import GovernedRun


@workflow.defn(name="AgentRun")
class AgentRun:
    """The workflow Temporal runs: its entry point and its handlers, each handing over to the run."""

    def __init__(self) -> None:
        self._run = GovernedRun()

    @workflow.run
    async def run(self, *args: RawValue) -> RunReport:
        # Decoded here, not by Temporal: a wrong number of arguments or an unreadable one fails the
        # run at once, naming the problem. `GovernedRun.run` decides whether carried state is
        # accepted.
        raw, carried = start_args(args, "AgentRun", RunMemory)
        return await self._run.run(raw, carried)

    def snapshot(self) -> RunSnapshot:
        """What the run holds at this point of its history (not a query: read on replay)."""
        return self._run.snapshot()

    def current_details(self) -> str:
        """The Temporal Web UI's current details (`workflows.current_details.CurrentDetails`)."""
        return self._run.current_details()

    @workflow.signal(name=names.RunMessages.APPROVE)
    def approve(self, *args: RawValue) -> None:
        self._run.take_vote(args, "approve", via="signal")

    @workflow.signal(name=names.RunMessages.DENY)
    def deny(self, *args: RawValue) -> None:
        self._run.take_vote(args, "deny", via="signal")

    @workflow.update(name=names.RunMessages.DECIDE)
    def decide_update(self, *args: RawValue) -> DecideResult:
        return self._run.decide_update(args)

    @workflow.signal(name=names.RunMessages.PAUSE)
    def pause(self, *args: RawValue) -> None:
        self._run.pause_signal(single(args), pausing=True)

    @workflow.signal(name=names.RunMessages.RESUME)
    def resume(self, *args: RawValue) -> None:
        self._run.pause_signal(single(args), pausing=False)

    @workflow.signal(name=names.RunMessages.WORKSPACE_SWITCH)
    def workspace_switch(self, *args: RawValue) -> None:
        payload = single(args)
        if isinstance(payload, Refusal):
            self._run.message_refused("workspace_switch", payload.reason)
        else:
            self._run.workspace_switch(payload)

    @workflow.signal(dynamic=True)
    def unknown_signal(self, name: str, args: Sequence[RawValue]) -> None:
        # Without this handler Temporal drops a signal of an unknown name in silence: an approver
        # who misspelled `approve` would believe their vote counted.
        self._run.unknown_signal(name, args)

    @workflow.update(dynamic=True)
    def unknown_update(self, name: str, args: Sequence[RawValue]) -> None:
        raise ApplicationError(f"unknown update {bounded(name, 200)!r}", type=errors.UNKNOWN_UPDATE)

    @unknown_update.validator
    def reject_unknown_update(self, name: str, args: Sequence[RawValue]) -> None:
        # Rejected before it is accepted, so it leaves no event in the run's history.
        raise ApplicationError(
            f"unknown update {bounded(name, 200)!r}; this run takes the update decide", type=errors.UNKNOWN_UPDATE
        )

    @workflow.query(name=names.RunMessages.STATUS)
    def status(self, *args: RawValue) -> Status:
        return self._run.status()

    @workflow.query(name=names.RunMessages.TIMELINE)
    def timeline(self, *args: RawValue) -> list[TimelineEntry]:
        return self._run.timeline()

    @workflow.query(dynamic=True)
    def unknown_query(self, name: str, args: Sequence[RawValue]) -> None:
        raise ApplicationError(
            f"unknown query {bounded(name, 200)!r}; this run answers status and timeline", type=errors.UNKNOWN_QUERY
        )
