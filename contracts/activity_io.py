"""Inputs and outcomes of Airlock's own activities (run context and tool calls).

Outcomes the workflow must branch on — invalid arguments, a tool's refusal, a call already done —
cross the activity boundary as a discriminated union, not as exceptions, so that they are recorded
as data and never retried.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, JsonValue

from contracts.catalog import CatalogEntry
from contracts.models import Compensation, FieldChange
from contracts.policy import Policy
from contracts.workspace_io import Admission, Switches


class RunContext(BaseModel):
    """What a run pins at its start, so that every later decision and any replay agree."""

    policy: Policy
    policy_hash: str
    catalog: list[CatalogEntry]
    default_model: str = "scripted"
    # Written into the history by the activity, so a replay of a history file (which does not
    # name its workflow) still knows the run's real id for keys and reports.
    workflow_id: str = ""
    # Pinned by workers that keep the workspace switches in the control store and gate every
    # tool call on it. A history pinned before (the field absent) replays as it ran: the run
    # trusted the switches it was sent, and its control workflow kept them only in memory.
    control_store: bool = False
    # What a workspace control workflow pinned afresh continues as new after (None: its default).
    control_events_per_history: int | None = None


class Started(BaseModel):
    """Result of `run.start`: the pinned context and, if the run joined its workspace in the
    same activity, its admission."""

    context: RunContext
    # None when the run did not join there: the policy refuses it, or a concurrency cap makes
    # its admission wait on the control workflow, which it does in a full activity instead.
    admission: Admission | None = None


class ToolCallInput(BaseModel):
    workflow_id: str
    workspace: str
    step: int
    index: int
    tool: str
    args: dict[str, JsonValue]
    idempotency_key: str | None = None
    # Whom the call is for, from the run's input: tools scope their data by it (`tools.Caller`).
    requested_by: str = ""
    agent: str = ""
    # Checked against the workspace's switches in the control store before the call starts (runs
    # since the `switch-gate` patch; earlier runs know no `Held` outcome).
    gate: bool = False


class Prepared(BaseModel):
    kind: Literal["prepared"] = "prepared"
    args: dict[str, JsonValue]
    diff: list[FieldChange] = Field(default_factory=list)
    facts: dict[str, JsonValue] = Field(default_factory=dict)


class Rejected(BaseModel):
    """The call cannot go on: arguments that do not fit the schema, or a tool's refusal."""

    kind: Literal["rejected"] = "rejected"
    error: str
    reason: Literal["unknown_tool", "invalid_arguments", "tool_error", "idempotency_conflict"]


class Executed(BaseModel):
    kind: Literal["executed"] = "executed"
    result: JsonValue
    compensation: Compensation | None = None
    # True when the ledger already held this key: the side effect ran once, earlier.
    deduplicated: bool = False
    # The change as previewed inside the write's own transaction, under its locks, just before
    # the write: what really changed. None from a ledger row written before it was kept.
    diff: list[FieldChange] | None = None
    # The facts that preview read; kept in the ledger only, for `AlreadyExecuted`.
    facts: dict[str, JsonValue] | None = None


class Held(BaseModel):
    """The call did not start: the workspace's switches, read from the control store as the call
    was about to start, forbid it, or the store could not be read (fail closed)."""

    kind: Literal["held"] = "held"
    reason: Literal["kill_switch", "safe_mode", "control_unreachable"]
    switches: Switches | None = None
    error: str = ""


class AlreadyExecuted(BaseModel):
    """The call's write already committed under its idempotency key (a replayed or retried
    preparation after a crash): the first result, diff and compensation, from the ledger. The
    call is recorded as executed; it is not decided, approved or executed again."""

    kind: Literal["already_executed"] = "already_executed"
    args: dict[str, JsonValue]
    executed: Executed


PrepareOutcome = Annotated[Prepared | Rejected | AlreadyExecuted, Field(discriminator="kind")]
ExecuteOutcome = Annotated[Executed | Rejected | Held, Field(discriminator="kind")]
