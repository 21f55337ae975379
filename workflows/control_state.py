"""What the workspace control workflow carries across continue-as-new, and keeping it under
Temporal's payload limit.

Temporal refuses a continue-as-new input over 2 MB; the workflow task that makes it fails at
every attempt, and the kill switch with it. What grows with what others send is bounded where it
is taken in (`workflows.workspace_control`); `fit_checkpoint` is the last line: it measures the
whole and, only when it is too large, leaves out what matters least, saying what it left out.
Pure: no I/O, nothing awaits.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

from contracts.activity_io import RunContext
from contracts.workspace_io import DaySpend, RefusedMessages, Switches

# Continue as new before the history grows large; registrations and acks are small but endless.
EVENTS_PER_HISTORY = 5_000
# Where a checkpoint is cut down: under Temporal's 2 MB, with room for the rest of the payload.
CHECKPOINT_BYTES = 1_500_000
# A day's spend by run is summed under this line past what is kept.
OTHER_RUNS = "(other runs)"


class Reservation(BaseModel):
    run_id: str
    agent: str
    requested_by: str
    usd: float
    day: str


class ControlState(BaseModel):
    workspace: str
    context: RunContext
    switches: Switches = Field(default_factory=Switches)
    switched_at: datetime | None = None
    # run id -> the generation it has acknowledged, and when it registered
    runs: dict[str, int] = Field(default_factory=dict)
    registered_at: dict[str, datetime] = Field(default_factory=dict)
    last_ack_after_s: float | None = None
    refused: list[str] = Field(default_factory=list)
    events_per_history: int = EVENTS_PER_HISTORY
    # Concurrency: runs refused at registration (run id -> why), and the runs that sign off.
    refused_runs: dict[str, str] = Field(default_factory=dict)
    signing_off: set[str] = Field(default_factory=set)
    max_concurrent_runs: int | None = None
    # Spend: open reservations and the ledger of recent days (newest last).
    reservations: dict[str, Reservation] = Field(default_factory=dict)
    days: list[DaySpend] = Field(default_factory=list)
    # Runs that said they ended (`leave`) while the server still listed them as running.
    leaving: set[str] = Field(default_factory=set)
    # Signals that could not be used.
    refused_messages: RefusedMessages = Field(default_factory=RefusedMessages)


_LONG_AGO = datetime.min.replace(tzinfo=UTC)


def json_bytes(text: str) -> int:
    """What a printable text weighs in the checkpoint's JSON: its UTF-8 bytes, and one more for
    each quote or backslash JSON escapes. Text with control characters (six bytes each) is
    refused where it comes in, so that this is exact."""
    return len(text.encode()) + text.count('"') + text.count("\\")


def size(state: BaseModel) -> int:
    """Bytes of the model as Temporal's pydantic converter writes it (JSON)."""
    return len(state.__pydantic_serializer__.to_json(state))


def fit_checkpoint(state: ControlState, limit: int = CHECKPOINT_BYTES) -> tuple[ControlState, list[str]]:
    """The checkpoint, and what was left out of it to fit in `limit` bytes (nothing, when it fits).

    Left out first what only explains the past: the registrations refused under a cap (a run
    asking for its admission again is refused again), the spend ledger's lines by run (summed under
    OTHER_RUNS, then those by requester and by agent; each day's total stays), the refused messages kept in full
    (their counts stay). Then, oldest first, the runs being tracked, those without a concurrency
    slot before those holding one: a run forgotten is not told of a switch, and still reads the
    switches from the control store before every call. Open spend reservations and the switches
    are never left out. What is taken in is bounded so that the whole fits without touching the
    runs (`workflows.workspace_control`); cutting them is the last line, not the plan."""
    if size(state) <= limit:
        return state, []
    s = state.model_copy(deep=True)
    left_out: list[str] = []
    if s.refused_runs:
        left_out.append(f"{len(s.refused_runs)} refused registrations")
        s.refused_runs = {}
    for field, what in (("by_run", "run"), ("by_requester", "requester"), ("by_agent", "agent")):
        lines = sum(len(getattr(day, field)) for day in s.days)
        if lines and size(s) > limit:
            for day in s.days:
                ledger: dict[str, float] = getattr(day, field)
                setattr(day, field, {OTHER_RUNS: round(sum(ledger.values()), 9)} if ledger else {})
            left_out.append(f"{lines} spend lines by {what}")
    if s.refused_messages.last and size(s) > limit:
        left_out.append(f"{len(s.refused_messages.last)} refused messages in full")
        s.refused_messages.last = []
    forgotten = 0
    # Popped from the end: runs without a slot first (a forgotten slot would admit a run past the
    # cap), the oldest of each first.
    newest_first = sorted(
        s.runs, key=lambda r: (r not in s.signing_off, s.registered_at.get(r, _LONG_AGO)), reverse=True
    )
    while newest_first and (excess := size(s) - limit) > 0:
        # A run costs at most its id thrice (its generation, its registration time, signing
        # off) and a little: forget no more than the excess needs, then measure again.
        while newest_first and excess > 0:
            run_id = newest_first.pop()  # the oldest
            excess -= 3 * json_bytes(run_id) + 64
            s.runs.pop(run_id)
            s.registered_at.pop(run_id, None)
            s.signing_off.discard(run_id)
            s.leaving.discard(run_id)
            forgotten += 1
    if forgotten:
        left_out.append(f"{forgotten} tracked runs")
    return s, left_out
