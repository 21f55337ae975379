"""The workspace control plane's messages: switches, registrations, acknowledgements."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from airlock.models import Comment, Name, Strict


def control_workflow_id(workspace: str) -> str:
    return f"workspace:{workspace}"


class Switches(BaseModel):
    """What every run of the workspace must obey, and which change of it this is."""

    generation: int = 0
    paused: bool = False
    safe_mode: bool = False
    by: str | None = None
    reason: str = ""


class RegisterRequest(BaseModel):
    workspace: str
    run_id: str


class SwitchRequest(Strict):
    """Payload of the `switch` update: turn the kill switch or safe mode on or off."""

    switch: Literal["kill_switch", "safe_mode"]
    on: bool
    by: Name
    reason: Comment = ""


class SwitchResult(BaseModel):
    accepted: bool
    reason: str | None = None
    generation: int | None = None
    runs_notified: int = 0


class Ack(BaseModel):
    run_id: str
    generation: int


class WorkspaceView(BaseModel):
    """Answer of the control workflow's `state` query."""

    workspace: str
    switches: Switches
    switched_at: datetime | None = None
    runs: int
    acknowledged: int
    last_ack_after_s: float | None = None
    refused: list[str] = Field(default_factory=list)
