"""The windowed limits in a counterfactual: what a new policy's limits make of each recorded call.

A live run asks the control store how much a limit's counter holds (every run's calls in the
window). A history holds that answer only for the limits the run had, as each call found its
counter (`CallRecord.limits`). So a limit the new policy counts the same way as the recorded one
(same id, same measure, per, window, `when` and workspaces; its max, effect or tier may differ)
reads the recorded counter. Any other limit counts what this run's own calls add, in the order and
at the instants they were decided, for the calls the new policy lets run (allowed, or approved):
other runs' calls in the window are not in the history, so that counter can only be lower than
the store's, and the comparison says so.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from contracts.models import CallRecord, Decision
from contracts.policy import Policy, WindowLimit
from contracts.policy_limits import CounterSeen
from policy.engine import CallContext
from policy.limits import amount, in_window, limits_for, subject, verdict

OWN_CALLS_ONLY = "counted from this run's calls alone (other runs' calls in the window are not in its history)"


class _Charge(NamedTuple):
    limit: str
    subject: str
    amount: Decimal
    at: float | None


def _measure(limit: WindowLimit) -> tuple[object, ...]:
    """What decides which calls a limit counts, and how much each adds."""
    return (limit.sum, limit.sum_fact, limit.count, limit.per, limit.seconds, limit.when, limit.workspaces)


class ReplayedLimits:
    """The new policy's limits over one recorded run, call by call, in the run's order."""

    def __init__(self, policy: Policy, recorded: Policy, decided_at: dict[tuple[int, int], datetime]) -> None:
        self._policy = policy
        self._recorded = {
            limit.id: _measure(limit) for tool in recorded.tools.values() for limit in tool.limits
        }  # fmt: skip
        self._decided_at = decided_at
        self._charges: list[_Charge] = []

    def _at(self, call: CallRecord) -> float | None:
        at = self._decided_at.get((call.step, call.index))
        return None if at is None else at.timestamp()

    def judge(self, call: CallRecord, context: CallContext, decision: Decision) -> tuple[Decision, str]:
        """The decision with the new limits' counters taken into account, and what to say of how
        they were counted ("" when every counter was read from the record)."""
        limits = limits_for(self._policy, context)
        if not limits:
            return decision, ""
        at = self._at(call)
        counters: list[CounterSeen] = []
        own = False
        for limit in limits:
            whose = subject(limit, context)
            adds = amount(limit, context)
            recorded = next((c for c in call.limits if c.limit == limit.id and c.subject == whose), None)
            if recorded is not None and recorded.used is not None and self._recorded.get(limit.id) == _measure(limit):
                used = recorded.used
            else:
                own = True
                used = sum(
                    (
                        c.amount
                        for c in self._charges
                        if c.limit == limit.id
                        and c.subject == whose
                        # Without both instants the call counts: a counter is never lower than the
                        # window says.
                        and (at is None or c.at is None or in_window(c.at, at, limit.seconds))
                    ),
                    Decimal(0),
                )
            counters.append(
                CounterSeen(
                    limit=limit.id,
                    per=limit.per,
                    subject=whose,
                    used=used if adds is not None else None,
                    amount=adds,
                    max=limit.max,
                    window=limit.window,
                    unit=limit.shown_unit,
                )
            )
        return verdict(self._policy, decision, limits, counters), OWN_CALLS_ONLY if own else ""

    def ran(self, call: CallRecord, context: CallContext) -> None:
        """The call runs under the new policy: what it adds to each counter counts for the calls after it."""
        at = self._at(call)
        for limit in limits_for(self._policy, context):
            adds = amount(limit, context)
            if adds is not None:
                self._charges.append(_Charge(limit.id, subject(limit, context), adds, at))
