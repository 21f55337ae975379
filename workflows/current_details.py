"""The run as the Temporal Web UI shows it: "current details" in Markdown, rendered on demand.

An approver who opens a run in the Web UI reads here what it waits for and what would change,
without sending a query: the state (a run whose Airlock state is `failed` or `stopped` says so in
its first words, though Temporal shows the workflow as completed), what holds it, and each pending
call with its field-level diff. Pure; `CurrentDetails` asks the run for it when the Web UI does.
"""

from __future__ import annotations

import json
from typing import Any

from temporalio import workflow
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.worker import (
    HandleQueryInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from contracts.models import FINAL_STATES, Hold, PendingApproval, RunState, summarize
from workflows.holds import at

# Temporal keeps user metadata small; a run with many pending changes is cut, and says so.
DETAILS_CHARS = 8_000
DIFF_LINES = 20

_HEADLINE = {
    RunState.RUNNING: "running",
    RunState.AWAITING_APPROVAL: "awaiting approval",
    RunState.PAUSED: "paused",
    RunState.COMPLETED: "completed",
    RunState.FAILED: "FAILED",
    RunState.BUDGET_EXHAUSTED: "ended: budget exhausted",
    RunState.STOPPED: "STOPPED",
}


def _value(v: object) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def render_details(
    *,
    state: RunState,
    workspace: str,
    goal: str,
    hold: Hold | None,
    pending: list[PendingApproval],
    last_error: str | None,
    end_reason: str | None,
) -> str:
    lines = [f"**Airlock: {_HEADLINE[state]}** · workspace `{workspace}`", "", f"Goal: {goal}"]
    if state in FINAL_STATES:
        if end_reason:
            lines += ["", f"Outcome: {end_reason}"]
    elif hold is not None:
        lines += [
            "",
            f"**Held since {at(hold.since)}**: {hold.waiting_for}",
            f"Released by: {hold.released_by}",
        ]
    for p in pending:
        lines += [
            "",
            f"### {p.tool} — {p.approval_id}",
            f"Arguments: {summarize(p.args)}",
            f"Tier {p.tier.value}: {p.approvals_still_needed} more approval(s) of "
            f"{' or '.join(p.approver_roles)}, by {at(p.deadline)}",
            "",
            "What would change:",
        ]
        lines += [f"- `{d.field}`: {_value(d.before)} → {_value(d.after)}" for d in p.diff[:DIFF_LINES]] or [
            "- (no field-level change previewed)"
        ]
        if len(p.diff) > DIFF_LINES:
            lines.append(f"- … and {len(p.diff) - DIFF_LINES} more (`airlock inbox`)")
        lines += [f"- voted: {v.approver} ({v.decision}){': ' + v.comment if v.comment else ''}" for v in p.votes]
    if last_error and state not in (RunState.COMPLETED,):
        lines += ["", f"Last error: {last_error}"]
    text = "\n".join(lines)
    return text if len(text) <= DETAILS_CHARS else text[: DETAILS_CHARS - 40] + "\n\n… (cut: `airlock show` has it all)"


METADATA_QUERY = "__temporal_workflow_metadata"


class CurrentDetails(Interceptor):
    """Answers the Web UI's metadata query with the run's details rendered at that moment.

    Rendering on demand instead of calling `workflow.set_current_details` at every change keeps
    the work off the run's steps (nobody may ever look), and the answer is never stale: a closed
    run's details come from replaying its history, so they show its final state.
    """

    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput) -> type[WorkflowInboundInterceptor]:
        return _FreshDetails


class _FreshDetails(WorkflowInboundInterceptor):
    async def handle_query(self, input: HandleQueryInput) -> Any:
        answer = await super().handle_query(input)
        if input.query == METADATA_QUERY and isinstance(answer, WorkflowMetadata):
            describe = getattr(workflow.instance(), "current_details", None)
            if callable(describe):
                answer.current_details = describe()
        return answer
