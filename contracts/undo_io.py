"""Input, plan and report of an `UndoRun`: running a finished run's compensations."""

from __future__ import annotations

from pydantic import BaseModel, Field

from contracts.models import Compensation, Mode, Name, RunReport, Strict

# The agent that runs a finished run's compensations. A run may act as it only as the child an
# `UndoRun` starts, with the id `compensation_run_id` gives it.
UNDO_AGENT = "undo"


def compensation_run_id(undo_workflow_id: str) -> str:
    return f"{undo_workflow_id}.compensations"


class UndoInput(Strict):
    run_id: Name
    # Who asks for the undo; by default the person who requested the original run.
    requested_by: Name | None = None
    mode: Mode = Mode.AUTO


class UndoStep(BaseModel):
    step: int
    index: int
    tool: str
    idempotency_key: str | None
    compensation: Compensation


class NotUndone(BaseModel):
    step: int
    index: int
    tool: str
    reason: str


class UndoPlan(BaseModel):
    run_id: str
    workspace: str
    requested_by: str
    steps: list[UndoStep] = Field(default_factory=list)
    not_undoable: list[NotUndone] = Field(default_factory=list)
    error: str | None = None


class UndoReport(BaseModel):
    undo_of: str
    state: str
    compensation_run: str | None = None
    undone: list[UndoStep] = Field(default_factory=list)
    not_undone: list[NotUndone] = Field(default_factory=list)
    report: RunReport | None = None
    # Signals sent to the undo run, which takes none: the first few (bounded), and how many.
    refused_signals: list[str] = Field(default_factory=list)
    refused_signal_count: int = 0
