"""Determinism: today's AgentRun, WorkspaceControl and UndoRun must replay the histories of runs
recorded by earlier code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer, WorkflowRunner

from recorder.flight_recorder import CaptureInstances
from runtime.converter import data_converter
from tests.conftest import Runs
from tests.history_scenarios import HISTORIES, SCENARIOS, histories_of
from worker import SANDBOX
from workflows.agent_run import AgentRun
from workflows.governed_run import GovernedRun
from workflows.search_attributes import STATE
from workflows.undo_run import UndoRun
from workflows.workspace_control import WorkspaceControl

# Histories of every released shape of the workflow: today's, and older ones kept in
# subfolders (e.g. runs from before the workspace control plane) that must still replay.
COMMITTED = sorted(HISTORIES.rglob("*.json"))


WORKFLOWS = {"AgentRun": AgentRun, "WorkspaceControl": WorkspaceControl, "UndoRun": UndoRun}


def replayer(workflow_type: str) -> Replayer:
    """A replayer of the one workflow the history is of: a history of another type fails."""
    return Replayer(workflows=[WORKFLOWS[workflow_type]], data_converter=data_converter)


def started(history: WorkflowHistory) -> Any:
    return history.events[0].workflow_execution_started_event_attributes


def replay_of(history: WorkflowHistory) -> Replayer:
    return replayer(started(history).workflow_type.name)


def load(text: str, fallback_id: str) -> WorkflowHistory:
    """The history under the workflow id it ran with (a control workflow checks its own id), where
    the server recorded it."""
    history = WorkflowHistory.from_json(fallback_id, text)
    workflow_id = started(history).workflow_id
    return WorkflowHistory.from_json(workflow_id, text) if workflow_id else history


def test_every_workflow_has_committed_histories() -> None:
    """Each of the three workflows is covered by at least one committed history."""
    types = {started(load(p.read_text(), p.stem)).workflow_type.name for p in HISTORIES.glob("*.json")}
    assert types == set(WORKFLOWS)


def test_every_scenario_has_a_committed_history() -> None:
    """The committed set covers approval, denial, budget, stop and continue-as-new runs, a control
    workflow's switches, registrations, spend and continue-as-new, and an undo."""
    assert {p.name.split(".")[0] for p in HISTORIES.glob("*.json")} == set(SCENARIOS)


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(HISTORIES)))
async def test_committed_history_replays(path: Path) -> None:
    """A non-deterministic change to the workflow fails here, naming the history it broke."""
    history = load(path.read_text(), path.stem)
    result = await replay_of(history).replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"


def _first_task_ended_before_the_start_result_was_used(history: WorkflowHistory) -> bool:
    """The shape of the race: the run's start (a local activity) is recorded with the first
    workflow task's commands, yet the run went on only in a second task, with no activity, timer
    or signal in between: the SDK handed the activity's result to the workflow a task late."""
    kinds = [e.event_type for e in history.events]
    completed = kinds.index(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
    scheduled = kinds.index(EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, completed)
    between = history.events[completed + 1 : scheduled]
    return any(e.marker_recorded_event_attributes.marker_name == "core_local_activity" for e in between)


async def test_a_run_whose_start_result_came_a_task_late_replays() -> None:
    """A run that met the race replays, and then publishes where it did: its state once, as it
    ended. Before `publish-by-clock` the run read the history's length after its start and
    replay read another one, and publishing by it replayed as an upsert the history did not hold
    ("UpsertWorkflowSearchAttributesMachine does not handle WorkflowExecutionCompleted")."""
    path = HISTORIES / "races" / "start-result-a-task-late.json"
    history = load(path.read_text(), path.stem)
    assert _first_task_ended_before_the_start_result_was_used(history)
    upserts = [e for e in history.events if e.HasField("upsert_workflow_search_attributes_event_attributes")]
    published = [
        e
        for e in upserts
        if STATE.name in e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
    ]
    assert len(published) == 1
    assert history.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
    result = await replay_of(history).replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None


@pytest.mark.parametrize(("runner", "imported_afresh"), [(None, True), (SANDBOX, False)], ids=["replay", "worker"])
async def test_the_run_is_sandboxed_where_histories_are_checked(
    runner: WorkflowRunner | None, imported_afresh: bool
) -> None:
    """The run's logic is imported inside the sandbox's restrictions when the committed histories
    are replayed here, so a clock or I/O call slipped into it fails these tests; the worker passes
    it through, so it is not imported again for every run."""
    capture = CaptureInstances()
    options: dict[str, Any] = {} if runner is None else {"workflow_runner": runner}
    replay = Replayer(workflows=[AgentRun], data_converter=data_converter, interceptors=[capture], **options)
    path = HISTORIES / "approved.json"
    result = await replay.replay_workflow(WorkflowHistory.from_json(path.stem, path.read_text()))
    assert result.replay_failure is None
    [(_, instance)] = capture.instances
    assert (type(instance._run) is not GovernedRun) is imported_afresh


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_fresh_history_replays(runs: Runs, scenario: str) -> None:
    """Histories recorded now, against a real server, replay with the same code."""
    handle = await SCENARIOS[scenario](runs)
    for text in await histories_of(runs.client, handle):
        history = load(text, handle.id)
        result = await replay_of(history).replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{scenario}: {result.replay_failure}"
