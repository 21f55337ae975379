"""A run's state: what it carries across continue-as-new and what its report is built from."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, JsonValue

from contracts.activity_io import RunContext
from contracts.catalog import CatalogEntry
from contracts.model_io import TranscriptItem
from contracts.models import (
    BudgetUse,
    CallRecord,
    CallStatus,
    Effect,
    Hold,
    Mode,
    PendingApproval,
    RefusedVote,
    RunInput,
    RunState,
    StepCost,
    TimelineEntry,
)
from contracts.workspace_io import Switches
from policy.engine import CallContext

# What a checkpoint keeps of the conversation and of decided approval ids: enough for the model's
# recent context and for "already decided" answers, bounded so every run's history stays flat.
TRANSCRIPT_KEPT = 40
DECIDED_KEPT = 500
PROPOSALS_KEPT = 1000


class RunMemory(BaseModel):
    """Everything a run knows.

    A continue-as-new checkpoint carries budgets, counters, the pinned policy, executed writes
    (what changed, how to undo it) and recent context; the per-call record of earlier runs stays
    in their own histories, where the flight recorder reads it back (`airlock show`).
    """

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
    # Every refused message of this history (votes, pauses, switches, unknown signals), also those
    # past the ones kept in full, by kind of reason (`workflows.entry.tally`).
    refused_messages: int = 0
    refused_by_reason: dict[str, int] = Field(default_factory=dict)
    decided_approvals: dict[str, str] = Field(default_factory=dict)
    paused_by: str | None = None
    # When the pause began and why, for the `held` answer.
    paused_at: datetime | None = None
    pause_reason: str = ""
    # How many times the run was paused: a signed resume names the pause it lifts.
    pauses: int = 0
    last_error: str | None = None
    runs_in_chain: int = 1
    # From earlier runs of the chain: their executed writes, how many calls they made, and how
    # many timeline entries they recorded (so audit event ids stay unique across the chain).
    carried_writes: list[CallRecord] = Field(default_factory=list)
    # Loop detection: how often each distinct call (by hash) was proposed.
    proposals_seen: dict[str, int] = Field(default_factory=dict)
    # Circuit breakers, per tool: consecutive infrastructure failures and when it may be retried.
    tool_failures: dict[str, int] = Field(default_factory=dict)
    open_circuits: dict[str, datetime] = Field(default_factory=dict)
    # Approximate bytes this run has added to its state (arguments, results, refused payloads).
    # Past a limit the run checkpoints, so no history event or report nears Temporal's 2 MB cap.
    segment_bytes: int = 0
    # The workspace control plane: whether this run joined it, and the switches last told.
    registered: bool = False
    switches: Switches = Field(default_factory=Switches)
    # Admitted under a concurrency cap: the run tells the control workflow when it ends.
    signs_off: bool = False
    refused_admission: str | None = None
    # The dearest model call so far: what the next one is expected to cost at most.
    dearest_model_call_usd: float = 0.0
    earlier_calls: int = 0
    timeline_offset: int = 0
    # Started under the `publish-when-seen` patch: the chain's runs publish their search
    # attributes when they first wait outside their first workflow task, and when they end.
    publish_when_seen: bool = False
    # Started under `publish-by-clock`: how long the run has gone on is told by its model calls'
    # recorded clock, not by the history's length.
    publish_by_clock: bool = False

    def call_context(
        self, entry: CatalogEntry, args: dict[str, JsonValue], facts: dict[str, JsonValue] | None = None
    ) -> CallContext:
        """What the policy looks at to decide on a call of this run."""
        return CallContext(
            workspace=self.input.workspace,
            agent=self.input.agent,
            requested_by=self.input.requested_by,
            mode=self.input.mode,
            tool=entry.name,
            effect=entry.effect,
            tier=entry.tier,
            args=args,
            facts=facts or {},
            arg_kinds=entry.arguments,
            fact_kinds=entry.facts,
            run_capabilities=None if self.input.capabilities is None else frozenset(self.input.capabilities),
            run_rules=tuple(self.input.rules),
        )

    def executed_writes(self) -> list[CallRecord]:
        current = [c for c in self.calls if c.status is CallStatus.EXECUTED and c.effect is not Effect.READ]
        return [*self.carried_writes, *current]

    def checkpoint(self) -> RunMemory:
        """The state the next run of the chain starts from."""
        # Scripted proposals already made are dropped: a long script must not ride along twice.
        model = self.input.model.model_copy(update={"script": self.input.model.script[self.script_position :]})
        return self.model_copy(
            update={
                "input": self.input.model_copy(update={"model": model}),
                "script_position": 0,
                "calls": [],
                "segment_bytes": 0,
                "timeline": [],
                "cost_by_step": [],
                "refused_votes": [],
                "refused_messages": 0,
                "refused_by_reason": {},
                "transcript": self.transcript[-TRANSCRIPT_KEPT:],
                "decided_approvals": dict(list(self.decided_approvals.items())[-DECIDED_KEPT:]),
                "carried_writes": self.executed_writes(),
                "earlier_calls": self.earlier_calls + len(self.calls),
                "timeline_offset": self.timeline_offset + len(self.timeline),
                "runs_in_chain": self.runs_in_chain + 1,
                "proposals_seen": dict(list(self.proposals_seen.items())[-PROPOSALS_KEPT:]),
            },
            deep=True,
        )


class RunSnapshot(BaseModel):
    """A run as its workflow holds it at this point of its history, for readers outside it (the
    flight recorder replays a history and reads this): None for `memory` when the run never
    started (its input was refused)."""

    state: RunState
    memory: RunMemory | None
    pending_approvals: list[PendingApproval] = Field(default_factory=list)
    held: Hold | None = None
