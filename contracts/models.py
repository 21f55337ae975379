"""The shapes that cross Airlock's boundaries: run input, signals, updates, queries and the report.

Everything here travels through Temporal (and so is stored in workflow histories) or is typed by a
person on the CLI. These models are durable contracts: add only optional fields with defaults, and
never rename a field that has shipped.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints

# Re-exported: where they have always been imported from.
from contracts.kinds import Effect as Effect
from contracts.kinds import Mode as Mode
from contracts.kinds import Outcome as Outcome
from contracts.kinds import Tier as Tier
from contracts.policy import RunRule
from contracts.policy_limits import CounterSeen


class Strict(BaseModel):
    """Input a person or a model wrote: unknown keys are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Record(BaseModel):
    """State and output written by Airlock itself."""

    model_config = ConfigDict(extra="ignore")


Name = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
# Free text a person types into a signal; bounded so that no payload can bloat a run's state.
Comment = Annotated[str, StringConstraints(max_length=2000)]
CallHash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
# base64 of a 64-byte Ed25519 signature
Signature = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{86}==$")]


# --- run input -------------------------------------------------------------------------------


class ScriptedCall(Strict):
    """One proposal of the `scripted` model: a tool call, or the final answer."""

    tool: Name | None = None
    args: dict[str, JsonValue] = Field(default_factory=dict)
    answer: str | None = None


class ModelSpec(Strict):
    provider: Literal["scripted", "openai"] = "scripted"
    name: str | None = None
    script: list[ScriptedCall] = Field(default_factory=list, max_length=10_000)
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)


class Budget(Strict):
    max_steps: int = Field(default=20, ge=1, le=1_000_000)
    max_tool_calls: int = Field(default=20, ge=0, le=1_000_000)
    max_tokens: int = Field(default=50_000, ge=0, le=1_000_000_000)
    max_cost_usd: float = Field(default=1.0, ge=0, le=1_000_000, allow_inf_nan=False)
    max_wall_clock_s: int = Field(default=3600, ge=1, le=366 * 86_400)
    # The same call (tool and arguments) proposed more often than this is a loop: the run ends.
    max_identical_calls: int = Field(default=3, ge=1, le=1000)


class RunInput(Strict):
    """The one JSON argument of an `AgentRun`, as typed on the Temporal CLI."""

    goal: Annotated[str, StringConstraints(min_length=1, max_length=20_000)]
    workspace: Name
    requested_by: Name
    agent: Name = "support"
    model: ModelSpec = Field(default_factory=ModelSpec)
    mode: Mode = Mode.APPROVE
    budget: Budget = Field(default_factory=Budget)
    # A run continues as new after this many steps, carrying its state, so that no single
    # history grows large; the server's own suggestion also triggers it.
    steps_per_history: int = Field(default=200, ge=1, le=10_000)
    # Task scope: the run may call only these of its agent's capabilities (None: all of them),
    # and its own rules may deny or demand approval for more. A run narrows, never widens.
    capabilities: list[Name] | None = Field(default=None, max_length=200)
    rules: list[RunRule] = Field(default_factory=list, max_length=50)


# --- signals and updates --------------------------------------------------------------------


class ApproveSignal(Strict):
    approval_id: Name
    approver: Name
    comment: Comment = ""


class DenySignal(Strict):
    approval_id: Name
    approver: Name
    reason: Comment = ""


class PauseSignal(Strict):
    by: Name
    reason: Comment = ""
    # Resuming loosens what the run obeys: where the workspace requires signed approvals, a
    # resume carries its sender's signature over `signing.resume_message`.
    signature: Signature | None = None


class DecideRequest(Strict):
    """Payload of the `decide` update: approve or deny, answered with accepted or why not."""

    approval_id: Name
    approver: Name
    decision: Literal["approve", "deny"]
    comment: Comment = ""
    # Binds the vote to the exact call (sha256 of tool and arguments); refused if it differs.
    call_hash: CallHash | None = None
    # Ed25519 signature by the approver's key (`airlock approve`); required where the workspace
    # asks for signed approvals, and always checked when present.
    signature: Signature | None = None


class DecideResult(Record):
    accepted: bool
    reason: str | None = None
    approval_id: str | None = None
    approvals_still_needed: int | None = None


# --- states, decisions and calls ------------------------------------------------------------


class RunState(StrEnum):
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    BUDGET_EXHAUSTED = "budget_exhausted"
    STOPPED = "stopped"


FINAL_STATES = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.BUDGET_EXHAUSTED, RunState.STOPPED})


class Decision(Record):
    """What the policy said about one call, and which rule said it."""

    outcome: Outcome
    rule: str
    reason: str
    tier: Tier
    approvals_required: int = 0
    approver_roles: list[str] = Field(default_factory=list)
    required_role: str | None = None
    timeout_s: int = 0
    matched_rules: list[str] = Field(default_factory=list)


class FieldChange(Record):
    field: str
    before: JsonValue = None
    after: JsonValue = None

    def __str__(self) -> str:
        """As the CLI shows a change: `orders[ORD-1001].refunded_usd: 0.00 -> 120.00`."""
        return f"{self.field}: {self.before} -> {self.after}"


class Compensation(Record):
    """How to undo one executed write: a tool and its arguments, or why it cannot be undone."""

    tool: str | None = None
    args: dict[str, JsonValue] = Field(default_factory=dict)
    note: str = ""


class Vote(Record):
    approver: str
    decision: Literal["approve", "deny"]
    at: datetime
    comment: str = ""
    # Kept as evidence: anyone holding the policy's public keys can check it again later.
    signature: str | None = None


class CallStatus(StrEnum):
    INVALID = "invalid"
    DENIED = "denied"
    SUGGESTED = "suggested"
    AWAITING_APPROVAL = "awaiting_approval"
    REJECTED = "rejected"
    EXECUTED = "executed"
    FAILED = "failed"
    STOPPED = "stopped"


class CallRecord(Record):
    """One proposed tool call and everything that happened to it."""

    step: int
    index: int
    tool: str
    args: dict[str, JsonValue] = Field(default_factory=dict)
    effect: Effect | None = None
    status: CallStatus
    decision: Decision | None = None
    error: str | None = None
    approval_id: str | None = None
    votes: list[Vote] = Field(default_factory=list)
    idempotency_key: str | None = None
    diff: list[FieldChange] = Field(default_factory=list)
    facts: dict[str, JsonValue] = Field(default_factory=dict)
    result: JsonValue = None
    compensation: Compensation | None = None
    # The windowed limits that counted the call, each counter as the call found it, and whether
    # its charges are held in the control store and not settled yet (docs/policy.md).
    limits: list[CounterSeen] = Field(default_factory=list)
    limits_open: bool = False


class PendingApproval(Record):
    approval_id: str
    step: int
    index: int
    tool: str
    args: dict[str, JsonValue]
    tier: Tier
    approvals_required: int
    approvals_still_needed: int
    approver_roles: list[str]
    required_role: str | None = None
    diff: list[FieldChange] = Field(default_factory=list)
    requested_at: datetime
    deadline: datetime
    votes: list[Vote] = Field(default_factory=list)
    # What a vote binds to and, where the workspace requires it, signs.
    call_hash: str | None = None
    signed_votes_required: bool = False
    # When the tier's escalation adds a role, and which.
    escalates_at: datetime | None = None
    escalated_to: str | None = None
    # Whose resource it is (the tier's `owner_fact`): only this person's vote counts. Set with
    # `owner_required` when the tier binds approval to the owner; None then means nobody's counts.
    owner: str | None = None
    owner_required: bool = False
    # The requester may approve their own run's call with a signed vote (`self_approval: signed`).
    self_approval_signed: bool = False
    # Who may approve it now (filled in by the `status` query): the approval inbox, per run.
    may_approve: list[str] = Field(default_factory=list)
    # The rule (or windowed limit) that sent the call for approval, and why.
    rule: str | None = None
    reason: str | None = None


TimelineKind = Literal[
    "run_started",
    "model_call",
    "proposal",
    "invalid_call",
    "decision",
    "approval_requested",
    "approval_vote",
    "approval_refused",
    "approval_escalated",
    "approval_resolved",
    "tool_result",
    "tool_error",
    "paused",
    "resumed",
    "continued_as_new",
    "circuit_open",
    "workspace_switch",
    "model_retry",
    "run_finished",
]


class TimelineEntry(Record):
    at: datetime
    step: int
    kind: TimelineKind
    tool: str | None = None
    call_index: int | None = None
    approval_id: str | None = None
    actor: str | None = None
    rule: str | None = None
    outcome: str | None = None
    message: str | None = None
    data: JsonValue = None


class Usage(Record):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class StepCost(Record):
    step: int
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class BudgetUse(Record):
    steps: int = 0
    tool_calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    wall_clock_s: float = 0.0


class RefusedVote(Record):
    at: datetime
    approval_id: str | None
    approver: str | None
    reason: str
    # The payload as received, as (bounded) JSON text.
    payload: str | None = None


HoldKind = Literal["approval", "paused", "kill_switch", "safe_mode", "control_store", "model_retry"]


class Hold(Record):
    """Why a run that is not finished is not moving, since when, and what would release it."""

    kind: HoldKind
    since: datetime
    # What the run waits for, in a sentence a person reads.
    waiting_for: str
    # What would let it go on: a command, a person, or a time.
    released_by: str
    # When the wait ends by itself (an approval's deadline, the next model attempt), if it does.
    until: datetime | None = None


class Status(Record):
    """Answer of the `status` query."""

    workflow_id: str
    state: RunState
    step: int
    mode: Mode
    used: BudgetUse
    left: BudgetUse
    limits: Budget
    pending_approvals: list[PendingApproval]
    paused_by: str | None = None
    last_error: str | None = None
    policy_hash: str
    # Tools this run has stopped calling for a while after repeated failures, and until when.
    open_circuits: dict[str, datetime] = Field(default_factory=dict)
    # The first run of the workflow's continue-as-new chain: signed votes name it.
    chain_run_id: str | None = None
    requested_by: str | None = None
    # Refused messages (votes, pauses, switches, signals of unknown names) in this history, by
    # kind of reason: a vote that did not count shows here even when the timeline is full.
    refused_messages: int = 0
    refused_by_reason: dict[str, int] = Field(default_factory=dict)
    # Set whenever the run is not moving: waiting for people, held by a pause, the kill switch
    # or safe mode, waiting for the control store, or retrying a failing model.
    held: Hold | None = None


class RunReport(Record):
    """What an `AgentRun` returns: who approved what, what changed, how to undo it, what it cost."""

    workflow_id: str
    state: RunState
    reason: str | None = None
    answer: str | None = None
    workspace: str
    agent: str
    requested_by: str
    mode: Mode
    model: str
    policy_hash: str
    started_at: datetime
    finished_at: datetime
    calls: list[CallRecord]
    changes: list[CallRecord] = Field(default_factory=list)
    undo: list[Compensation] = Field(default_factory=list)
    cost_by_step: list[StepCost] = Field(default_factory=list)
    used: BudgetUse
    limits: Budget
    refused_votes: list[RefusedVote] = Field(default_factory=list)
    # Every refused message, also those past the refused votes kept in full, by kind of reason.
    refused_messages: int = 0
    refused_by_reason: dict[str, int] = Field(default_factory=dict)
    # What was left out so that the report fits a Temporal payload, by field: how many entries
    # were dropped, or had their arguments, results and diffs replaced by a hash. The run's
    # histories still hold everything (`airlock show`).
    summarised: dict[str, int] = Field(default_factory=dict)
    runs_in_chain: int = 1
    # A long run continues as new: `calls` are those of its last run; earlier runs' calls are in
    # their own histories (`airlock show` joins them). `changes` and `undo` cover the whole chain.
    earlier_calls: int = 0


# The one key of a sealed secret's token (`runtime.sealing`): `{"$airlock_secret": "v1...."}`.
SECRET_TOKEN_KEY = "$airlock_secret"


def _shown(value: Any) -> Any:
    return "(secret)" if isinstance(value, dict) and SECRET_TOKEN_KEY in value else value


def summarize(values: dict[str, Any], limit: int = 120) -> str:
    """A one-line rendering of arguments for activity summaries and logs; a sealed secret shows
    as `(secret)`, not as its (long, opaque) token."""
    text = ", ".join(f"{k}={_shown(v)}" for k, v in values.items())
    return text if len(text) <= limit else text[: limit - 1] + "…"
