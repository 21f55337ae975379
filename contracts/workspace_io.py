"""The workspace control plane's messages: switches, registrations, acknowledgements, spend."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field, StringConstraints, ValidationError

from contracts.models import Comment, Name, Signature, Strict

# An id or a name in a control message: at most as long as Temporal allows a workflow id, so that a
# message cannot make the control workflow keep more than a real run would.
ID_CHARS = 1000
Id = Annotated[str, StringConstraints(max_length=ID_CHARS)]


def control_workflow_id(workspace: str) -> str:
    return f"workspace:{workspace}"


Message = TypeVar("Message", bound=BaseModel)


def parse_signal(model: type[Message], payload: Any) -> Message | None:
    """A control-plane signal's payload, or None when it is malformed: a signal has no sender to
    answer, and a payload that cannot be read must be dropped, not fail the workflow task."""
    try:
        return model.model_validate(payload)
    except ValidationError:
        return None


# The control workflow's memo key under which it publishes its switches. A starting run reads
# them there (a read of the server's state, no task for the control workflow) before it registers.
SWITCHES_MEMO = "switches"


class Switches(BaseModel):
    """What every run of the workspace must obey, and which change of it this is."""

    generation: int = 0
    paused: bool = False
    safe_mode: bool = False
    by: str | None = None
    reason: str = ""


class RegisterRequest(BaseModel):
    workspace: Id
    run_id: Id
    # The first run of the workflow's chain: a later start under the same workflow id is a new
    # registration, not a retry of an earlier (perhaps refused) one.
    chain_run_id: Id = ""
    agent: Id = ""
    requested_by: Id = ""
    # The cap in the run's pinned policy; the control workflow holds the count.
    max_concurrent_runs: int | None = None
    # The switches generation the run read from the control workflow's memo before registering:
    # the control workflow tells it of any newer one. None: the run reads its admission with the
    # `admission` query instead (runs under a concurrency cap, and runs of earlier versions).
    read_generation: int | None = None


class RegisterBatch(BaseModel):
    """Payload of the `register_batch` signal: runs of one workspace, with no concurrency cap,
    joining together (a worker's burst of starts). Each says the generation it read."""

    registrations: list[RegisterRequest] = Field(min_length=1, max_length=1000)


def registration_key(run_id: str, chain_run_id: str) -> str:
    return f"{run_id}@{chain_run_id}"


def registered_run_id(key: str) -> str:
    """The run id in a `registration_key`."""
    return key.rsplit("@", 1)[0]


class Admission(Switches):
    """Answer to a registration: the switches in force and whether the run may go on."""

    admitted: bool = True
    refusal: str | None = None
    # A run admitted under a concurrency cap tells the control workflow when it ends.
    signs_off: bool = False


class ReserveRequest(BaseModel):
    """Payload of the `reserve` update: hold the estimated cost of a run's next model call."""

    workspace: Id
    run_id: Id
    reservation_id: Id = Field(min_length=1)
    agent: Id
    requested_by: Id
    usd: float = Field(ge=0, allow_inf_nan=False)
    cap_usd: float = Field(gt=0, allow_inf_nan=False)


class SpendHold(BaseModel):
    """What a paid model call holds against its workspace's daily cap while it is made; the
    model call's own activity holds and settles it in the control store."""

    workspace: str
    reservation_id: str = Field(min_length=1)
    # The run's day (workflow time), to which the call is charged.
    day: str
    run_id: str
    agent: str
    requested_by: str
    usd: float = Field(ge=0, allow_inf_nan=False)
    cap_usd: float = Field(gt=0, allow_inf_nan=False)


class ReserveResult(BaseModel):
    granted: bool
    reason: str | None = None
    spent_usd: float = 0.0
    reserved_usd: float = 0.0


class Settle(BaseModel):
    """What a reserved model call really cost (0 when it failed)."""

    reservation_id: Id
    usd: float = Field(ge=0, allow_inf_nan=False)


class Leave(BaseModel):
    run_id: Id


class DaySpend(BaseModel):
    """One UTC day of a workspace's model spend, attributed as the report needs it."""

    day: str
    spent_usd: float = 0.0
    cap_usd: float | None = None
    refused: int = 0
    by_agent: dict[str, float] = Field(default_factory=dict)
    by_requester: dict[str, float] = Field(default_factory=dict)
    by_run: dict[str, float] = Field(default_factory=dict)


class SpendView(BaseModel):
    """Answer of the control workflow's `spend` query: today first, then earlier days."""

    workspace: str
    reserved_usd: float
    days: list[DaySpend]


class SwitchRequest(Strict):
    """Payload of the `switch` update: turn the kill switch or safe mode on or off."""

    switch: Literal["kill_switch", "safe_mode"]
    on: bool
    by: Name
    reason: Comment = ""
    # Where the workspace requires signed approvals, the admin's signature over
    # `signing.switch_message` for the generation this change creates (`airlock workspace` signs).
    signature: Signature | None = None


class StoreSwitches(BaseModel):
    """Input of `workspace.store_switches`: the change to commit, one generation past the store's."""

    workspace: str
    switches: Switches


class StoredSwitches(BaseModel):
    """Whether the change committed, and the switches the store holds now."""

    committed: bool
    switches: Switches


class SwitchResult(BaseModel):
    accepted: bool
    reason: str | None = None
    generation: int | None = None
    runs_notified: int = 0


class Ack(BaseModel):
    run_id: Id
    generation: int


class RefusedMessages(BaseModel):
    """Messages the control workflow could not use (malformed, too large, of an unknown name): how
    many, counted by kind of reason, and the last few in full (each bounded)."""

    total: int = 0
    by_reason: dict[str, int] = Field(default_factory=dict)
    last: list[str] = Field(default_factory=list)


class WorkspaceView(BaseModel):
    """Answer of the control workflow's `state` query."""

    workspace: str
    switches: Switches
    switched_at: datetime | None = None
    runs: int
    acknowledged: int
    last_ack_after_s: float | None = None
    refused: list[str] = Field(default_factory=list)
    max_concurrent_runs: int | None = None
    # Signals refused as unusable; a malformed update is rejected to its sender and leaves no trace.
    refused_messages: RefusedMessages = Field(default_factory=RefusedMessages)
