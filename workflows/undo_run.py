"""`UndoRun`: runs a finished run's compensations, newest first, through the same airlock.

The compensations are proposed to a child `AgentRun` (agent `undo`) as a scripted plan, so each
one is validated, previewed, decided by the policy, approved where the policy says and executed
under an idempotency key, exactly like any other call. Compensations restore recorded values, so
running them again changes nothing more. What cannot be undone (an email sent) is reported with
the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from temporalio import workflow
from temporalio.common import (
    RawValue,
    RetryPolicy,
    SearchAttributePair,
    TypedSearchAttributes,
)
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from contracts import errors
    from contracts.models import CallStatus, RunReport
    from contracts.undo_io import UNDO_AGENT, NotUndone, UndoInput, UndoPlan, UndoReport, compensation_run_id
    from contracts.validation import describe_validation_error
    from workflows.entry import NAME_CHARS, bounded, shown_args, start_args
    from workflows.search_attributes import UNDO_OF, WORKSPACE
    from workflows.sizes import fit_report, size

# Refused signals kept in the report in full; the rest are counted.
REFUSED_KEPT = 20
REPORT_BYTES = 1_500_000


@workflow.defn(name="UndoRun")
class UndoRun:
    def __init__(self) -> None:
        self._refused: list[str] = []
        self._refused_count = 0

    @workflow.run
    async def run(self, *args: RawValue) -> UndoReport:
        # Decoded here, not by Temporal, so that a wrong number of arguments or one in an unknown
        # encoding fails the run at once instead of its first workflow task, forever.
        raw, _ = start_args(args, "UndoRun")
        report = await self._undo(raw)
        report.refused_signals, report.refused_signal_count = self._refused, self._refused_count
        if report.report is not None and size(report) > REPORT_BYTES:
            room = REPORT_BYTES - (size(report) - size(report.report))
            report.report = fit_report(report.report, max(room, REPORT_BYTES // 4))
        return report

    @workflow.signal(dynamic=True)
    def any_signal(self, name: str, args: Sequence[RawValue]) -> None:
        # Temporal would drop it in silence; the report says it was refused.
        self._refused_count += 1
        if len(self._refused) < REFUSED_KEPT:
            self._refused.append(
                bounded(
                    f"signal {bounded(name, NAME_CHARS)!r} refused: UndoRun takes no signals; sent {shown_args(args, 200)}"
                )
            )
        workflow.logger.warning("signal %r refused: UndoRun takes no signals", bounded(name, NAME_CHARS))

    async def _undo(self, raw: object) -> UndoReport:
        try:
            request = UndoInput.model_validate(raw)
        except ValidationError as e:
            raise ApplicationError(
                "invalid undo input: " + describe_validation_error(e), type=errors.INVALID_RUN_INPUT, non_retryable=True
            ) from None
        plan: UndoPlan = await workflow.execute_activity(
            "undo.plan",
            request.run_id,
            result_type=UndoPlan,
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(maximum_attempts=5),
            summary=f"plan the undo of {request.run_id}",
        )
        if plan.error:
            raise ApplicationError(plan.error, type=errors.UNDO_NOT_POSSIBLE, non_retryable=True)
        workflow.upsert_search_attributes([UNDO_OF.value_set(plan.run_id), WORKSPACE.value_set(plan.workspace)])
        if not plan.steps:
            return UndoReport(undo_of=plan.run_id, state="completed", not_undone=plan.not_undoable)

        child_id = compensation_run_id(workflow.info().workflow_id)
        report: RunReport = await workflow.execute_child_workflow(
            "AgentRun",
            {
                "goal": f"Undo run {plan.run_id}: run its compensations, newest first",
                "workspace": plan.workspace,
                "requested_by": request.requested_by or plan.requested_by,
                "agent": UNDO_AGENT,
                "mode": request.mode.value,
                "model": {
                    "provider": "scripted",
                    "script": [{"tool": s.compensation.tool, "args": s.compensation.args} for s in plan.steps],
                },
                "budget": {
                    "max_steps": len(plan.steps) + 1,
                    "max_tool_calls": len(plan.steps),
                    "max_wall_clock_s": 7 * 86_400,
                },
            },
            id=child_id,
            result_type=RunReport,
            static_summary=f"Undo of {plan.run_id}: {len(plan.steps)} compensation(s), newest first",
            # The compensation run points back at the run it undoes, for `airlock show`.
            search_attributes=TypedSearchAttributes([SearchAttributePair(UNDO_OF, plan.run_id)]),
        )
        undone, not_undone = [], list(plan.not_undoable)
        for step, call in zip(plan.steps, report.calls, strict=False):
            if call.status is CallStatus.EXECUTED:
                undone.append(step)
            else:
                not_undone.append(
                    NotUndone(
                        step=step.step, index=step.index, tool=step.tool, reason=f"{call.status.value}: {call.error}"
                    )
                )
        for step in plan.steps[len(report.calls) :]:
            not_undone.append(
                NotUndone(step=step.step, index=step.index, tool=step.tool, reason=f"not reached: {report.reason}")
            )
        complete = len(undone) == len(plan.steps)
        return UndoReport(
            undo_of=plan.run_id,
            state="completed" if complete else "incomplete",
            compensation_run=child_id,
            undone=undone,
            not_undone=not_undone,
            report=report,
        )
