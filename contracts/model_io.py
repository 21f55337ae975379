"""What the workflow sends to `model.decide` and what it gets back, for every provider."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, JsonValue

from contracts.models import ScriptedCall
from contracts.workspace_io import SpendHold


class TranscriptItem(BaseModel):
    """One turn of the conversation the model sees.

    `tool_result` items carry data produced by tools (and so, indirectly, by whoever wrote that
    data). Providers must hand them to the model as delimited data, never as instructions.
    """

    role: Literal["assistant", "tool_result", "airlock"]
    call_id: str | None = None
    tool: str | None = None
    args: dict[str, JsonValue] | None = None
    content: str = ""


class ModelRequest(BaseModel):
    workflow_id: str
    workspace: str
    step: int
    provider: Literal["scripted", "openai"]
    model_name: str | None = None
    temperature: float | None = None
    goal: str
    # The tools this agent may call; the activity looks their schemas up in its registry, so
    # the schemas are not written into the history at every step.
    tool_names: list[str] = Field(default_factory=list)
    transcript: list[TranscriptItem] = Field(default_factory=list)
    # `scripted` only: the proposal for this step, or None once the script is spent.
    scripted: ScriptedCall | None = None
    # Under a daily spend cap (runs pinned with the control store): what the call holds first.
    spend: SpendHold | None = None


class ProposedCall(BaseModel):
    call_id: str
    tool: str
    # Arguments as the model wrote them. `args_error` is set when they were not a JSON object.
    args: dict[str, JsonValue] = Field(default_factory=dict)
    args_error: str | None = None


class ModelDecision(BaseModel):
    calls: list[ProposedCall] = Field(default_factory=list)
    answer: str | None = None
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    # The call was not made: its estimate would pass the workspace's daily spend cap.
    spend_refusal: str | None = None
    # When the worker had the decision, by its clock. Recorded with the result, so a run that
    # goes by it (`workflows.eras.PUBLISH_BY_CLOCK`) reads the same time on every replay.
    decided_at: datetime | None = None
