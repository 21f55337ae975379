"""Windowed limits as they cross Temporal: what a run asks the control store to hold for a call,
what the store answers, and the counters a call's record keeps (docs/policy.md, "Windowed limits").
The policy's side, `WindowLimit`, is in contracts/policy.py with the rest of the policy.

A counter is (workspace, limit id, subject): the subject is the requester, the agent, or `*` for
the whole workspace. Amounts are decimals in the limit's unit (USD, payees, messages).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field

# The longest window a limit may count over: a counter's entries are kept this long at most.
MAX_WINDOW_S = 366 * 86_400
WINDOW_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
Per = Literal["requester", "agent", "workspace"]
# The subject of a counter kept for the whole workspace.
WHOLE_WORKSPACE = "*"


class LimitCharge(BaseModel):
    """What one call adds to one limit's counter, and the max it is checked against."""

    limit: str = Field(min_length=1, max_length=200)
    subject: str = Field(min_length=1, max_length=1000)
    amount: Decimal = Field(ge=0, allow_inf_nan=False)
    max: Decimal = Field(ge=0, allow_inf_nan=False)
    window_s: int = Field(ge=1, le=MAX_WINDOW_S)


class ReserveLimits(BaseModel):
    """Input of `limits.reserve`: hold the call's charges, all or none, each checked against its max.

    `call_key` is the call's idempotency key: asking again with it (a retried or replayed activity,
    a worker killed after the store committed) finds what the first ask held and counts nothing
    twice. `force` holds whatever the counters say: a person approved the call after a limit sent
    it for approval."""

    workspace: str
    call_key: str = Field(min_length=1)
    run_id: str
    tool: str
    charges: list[LimitCharge] = Field(min_length=1, max_length=50)
    force: bool = False


class CounterUse(BaseModel):
    """One counter as the store found it: what the window held before this call (committed and
    reserved, this call's own entry left out), and whether this call's entry was there already."""

    limit: str
    subject: str
    used: Decimal = Field(ge=0, allow_inf_nan=False)
    again: bool = False


class LimitsHeld(BaseModel):
    """Answer of `limits.reserve`: every charge held (`held`), or none of them."""

    held: bool
    counters: list[CounterUse]


class SettleLimits(BaseModel):
    """Input of `limits.settle`: the calls ran (their entries are committed, stamped when settled)
    or did not (their entries are released)."""

    workspace: str
    call_keys: list[str] = Field(min_length=1, max_length=1000)
    executed: bool


class CounterSeen(BaseModel):
    """One limit's counter as a call found it, kept in the call's record: `used` before the call,
    the call's `amount`, the `max`, and whether the call's charge is held in the store.

    `used` or `amount` is None when the call's amount could not be read (a missing or non-numeric
    argument or fact): the limit then counts the call as over its max, without asking the store."""

    limit: str
    per: Per = "requester"
    subject: str
    # Sums of amounts the store holds: never negative, never NaN, in a record read back (a
    # history file given to `airlock replay`) as in a live one.
    used: Decimal | None = Field(None, ge=0, allow_inf_nan=False)
    amount: Decimal | None = Field(None, ge=0, allow_inf_nan=False)
    max: Decimal = Field(ge=0, allow_inf_nan=False)
    window: str
    unit: str = ""
    held: bool = False


class SubjectUsage(BaseModel):
    """One counter of a limit: what its window holds now, settled (`committed`) and held for
    calls not yet settled (`reserved`)."""

    subject: str
    committed: Decimal
    reserved: Decimal


class LimitUsage(BaseModel):
    """A windowed limit of the policy as `airlock workspace limits` shows it: what it counts, its
    max, and each counter with anything in its window."""

    limit: str
    tool: str
    measure: str
    per: Per
    window: str
    max: Decimal
    unit: str = ""
    effect: str
    counters: list[SubjectUsage] = Field(default_factory=list)
