"""The flight recorder: what a run did, rebuilt from its workflow history alone.

The history is replayed through today's AgentRun code with Temporal's `Replayer`: the workflow's
own logic rebuilds its state (calls, decisions, votes, diffs, costs) exactly as the worker had it,
so no second interpretation of events can drift from the first. No worker, database or model is
needed; only the history (from the server, or a `temporal workflow show --output json` file).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Engine
from temporalio import workflow
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    Replayer,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from contracts.models import CallRecord, Hold, PendingApproval, RunState
from runtime.converter import data_converter
from tools import blobs
from workflows.agent_run import AgentRun
from workflows.memory import RunMemory
from workflows.undo_run import UndoRun
from workflows.workspace_control import WorkspaceControl

# Every workflow type a history may be of: `airlock replay` checks any of them.
WORKFLOWS = [AgentRun, UndoRun, WorkspaceControl]


class ReplayFailed(Exception):
    """Today's code does not replay this history: it is not deterministic with it."""


class Recording(BaseModel):
    """One run as its history tells it."""

    workflow_id: str
    state: RunState
    memory: RunMemory
    pending_approvals: list[PendingApproval] = Field(default_factory=list)
    # What holds the run where its history ends (an open run): the same answer `status` gives.
    held: Hold | None = None
    closed: bool
    undone_by: list[str] = Field(default_factory=list)
    # The first run of the workflow's continue-as-new chain: what signed votes name.
    chain_run_id: str = ""

    @property
    def calls(self) -> list[CallRecord]:
        return self.memory.calls


@dataclass
class CaptureInstances(Interceptor):
    """Keeps a reference to each replayed workflow instance so its state can be read after."""

    instances: list[tuple[str, Any]] = field(default_factory=list)

    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput) -> type[WorkflowInboundInterceptor]:
        instances = self.instances

        class _Inbound(WorkflowInboundInterceptor):
            async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
                instances.append((workflow.info().workflow_type, workflow.instance()))
                return await super().execute_workflow(input)

        return _Inbound


def _closed(history: WorkflowHistory) -> bool:
    last = history.events[-1] if history.events else None
    return last is not None and any(
        last.HasField(name)
        for name in (
            "workflow_execution_completed_event_attributes",
            "workflow_execution_failed_event_attributes",
            "workflow_execution_canceled_event_attributes",
            "workflow_execution_terminated_event_attributes",
            "workflow_execution_timed_out_event_attributes",
            "workflow_execution_continued_as_new_event_attributes",
        )
    )


async def replay(history: WorkflowHistory, workflows: Sequence[type] = ()) -> None:
    """Replays one history; raises ReplayFailed naming the problem when it is not deterministic."""
    replayer = Replayer(workflows=list(workflows) or WORKFLOWS, data_converter=data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    if result.replay_failure is not None:
        raise ReplayFailed(str(result.replay_failure))


async def reconstruct(history: WorkflowHistory) -> Recording:
    """The run's state at the end of this history (the last run of a continue-as-new chain
    carries the record of the runs before it)."""
    capture = CaptureInstances()
    replayer = Replayer(workflows=WORKFLOWS, data_converter=data_converter, interceptors=[capture])
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    if result.replay_failure is not None:
        raise ReplayFailed(str(result.replay_failure))
    # The sandbox re-imports workflow classes, so the instance is told apart by its type name.
    runs = [instance for kind, instance in capture.instances if kind == "AgentRun"]
    if not runs:
        raise ReplayFailed("the history holds no AgentRun execution")
    snapshot = runs[-1].snapshot()
    if snapshot.memory is None:
        raise ReplayFailed("the run never started: its input was refused")
    return Recording(
        workflow_id=snapshot.memory.context.workflow_id or history.workflow_id,
        state=snapshot.state,
        memory=snapshot.memory,
        pending_approvals=snapshot.pending_approvals,
        held=None if _closed(history) else snapshot.held,
        closed=_closed(history),
        chain_run_id=_first_run_id(history),
    )


def _first_run_id(history: WorkflowHistory) -> str:
    first = history.events[0] if history.events else None
    if first is None or not first.HasField("workflow_execution_started_event_attributes"):
        return ""
    return first.workflow_execution_started_event_attributes.first_execution_run_id


def resolve_blobs(rec: Recording, engine: Engine) -> Recording:
    """Swaps stored-by-reference tool results for their content, where the database has them."""
    for call in rec.memory.calls:
        with contextlib.suppress(LookupError):
            call.result = blobs.resolve(engine, call.result)
    return rec


def load_history(path: Path | str) -> WorkflowHistory:
    """A history file written by `temporal workflow show --output json`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ReplayFailed(f"{path}: not a readable history file: {e}") from None
    # The file does not name its workflow; its name is the label for messages, unless the started
    # event holds the workflow id it ran with (a control workflow checks its own id on replay).
    history = WorkflowHistory.from_json(path.name.split(".json")[0], data)
    started = history.events[0].workflow_execution_started_event_attributes if history.events else None
    workflow_id = started.workflow_id if started is not None else ""
    return WorkflowHistory.from_json(workflow_id, data) if workflow_id else history


async def fetch_history(client: Client, workflow_id: str, run_id: str | None = None) -> WorkflowHistory:
    return await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()


def merge(chain: Sequence[Recording]) -> Recording:
    """The runs of one continue-as-new chain, oldest first, as one recording."""
    if len(chain) == 1:
        return chain[0]
    last = chain[-1]
    memory = last.memory.model_copy(
        update={
            "calls": [c for r in chain for c in r.memory.calls],
            "timeline": [e for r in chain for e in r.memory.timeline],
            "cost_by_step": [s for r in chain for s in r.memory.cost_by_step],
            "refused_votes": [v for r in chain for v in r.memory.refused_votes],
            # Every call is in `calls` now; the carried copies would count writes twice.
            "carried_writes": chain[0].memory.carried_writes,
            "earlier_calls": chain[0].memory.earlier_calls,
            "timeline_offset": chain[0].memory.timeline_offset,
        },
        deep=True,
    )
    return last.model_copy(update={"memory": memory})


def _previous_run(history: WorkflowHistory) -> str | None:
    first = history.events[0] if history.events else None
    if first is None or not first.HasField("workflow_execution_started_event_attributes"):
        return None
    return first.workflow_execution_started_event_attributes.continued_execution_run_id or None


async def record_of(client: Client, workflow_id: str, *, undo_links: bool = True) -> Recording:
    """A run and every run before it in its continue-as-new chain, with (unless asked not to:
    it costs a visibility query) the undo runs that point back at it."""
    histories = [await fetch_history(client, workflow_id)]
    while (previous := _previous_run(histories[0])) is not None:
        histories.insert(0, await fetch_history(client, workflow_id, previous))
    recording = merge([await reconstruct(h) for h in histories])
    if not undo_links:
        return recording
    query = f'AirlockUndoOf="{workflow_id}"'
    try:
        recording.undone_by = [w.id async for w in client.list_workflows(query)]
    except Exception:  # an older server without the attribute: the link is optional
        recording.undone_by = []
    return recording
