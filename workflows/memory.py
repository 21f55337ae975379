"""A run's state: what it carries across continue-as-new and what its report is built from."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from airlock.activity_io import RunContext
from airlock.model_io import TranscriptItem
from airlock.models import (
    BudgetUse,
    CallRecord,
    Mode,
    RefusedVote,
    RunInput,
    StepCost,
    TimelineEntry,
)


class RunMemory(BaseModel):
    """Everything a run knows. Carried whole into the next run of a continue-as-new chain."""

    input: RunInput
    context: RunContext
    mode: Mode
    started_at: datetime
    used: BudgetUse = Field(default_factory=BudgetUse)
    script_position: int = 0
    calls: list[CallRecord] = Field(default_factory=list)
    timeline: list[TimelineEntry] = Field(default_factory=list)
    cost_by_step: list[StepCost] = Field(default_factory=list)
    transcript: list[TranscriptItem] = Field(default_factory=list)
    refused_votes: list[RefusedVote] = Field(default_factory=list)
    decided_approvals: dict[str, str] = Field(default_factory=dict)
    paused_by: str | None = None
    last_error: str | None = None
    runs_in_chain: int = 1
