"""The windowed limits in a counterfactual: what a new policy's limits make of each recorded call.

A live run asks the control store how much a limit's counter holds (every run's calls in the
window). A history holds that answer only for the limits the run had, as each call found its
counter when it was decided (`CallRecord.limits`; a call approved after a wait keeps the counter
its approval found instead, so it is not read). So:

- a limit the new policy counts the same way as the recorded one (same id, measure, per, window,
  `when` and workspaces; its max, effect or tier may differ) reads the recorded counter, with
  this run's calls set right: one the new policy counts that did not run (or was not made) then
  is added, one that ran then and the new policy refuses is taken out;
- any other limit counts what this run's own calls add, for the calls the new policy lets run or
  sends for approval (a call waiting for approval holds its charge in the store, or takes it once
  approved). Other runs' calls in the window are not in the history, so that counter can only be lower than
  the store's, and the comparison names the limits counted so.

A call is checked at the first instant the history shows of it (its proposal), and what it adds is
stamped with the last (its approval, its result), as the store stamps a call when it settles; a
call the history shows no instant of counts in every window. A recorded counter holds the charges
of the calls before its own in the recorded run (by step and index) that the store held then, so
a call a new model proposes in another order is set right by that order, not the new one.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from contracts.models import CallRecord, Decision, Outcome
from contracts.policy import Policy, WindowLimit
from contracts.policy_limits import CounterSeen
from policy.engine import CallContext
from policy.limits import amount, limits_for, subject, verdict, window_start


class _Charge(NamedTuple):
    amount: Decimal
    at: float | None
    # Whether the call counts in the counterfactual, and where it was in the recorded run when
    # the store held its charge (None when it did not): the recorded counters of the calls
    # after it there hold what it added.
    counts: bool
    held_at: tuple[int, int] | None


class Instants(NamedTuple):
    """The first instant the timeline shows of each recorded call (step, index), its proposal,
    and the last."""

    first: dict[tuple[int, int], datetime]
    last: dict[tuple[int, int], datetime]


def _measure(limit: WindowLimit) -> tuple[object, ...]:
    """What decides which calls a limit counts, and how much each adds."""
    return (limit.sum, limit.sum_fact, limit.count, limit.per, limit.seconds, limit.when, limit.workspaces)


def _stamp(at: datetime | None) -> float | None:
    return None if at is None else at.timestamp()


def _recorded_counter(call: CallRecord, limit: WindowLimit, whose: str) -> CounterSeen | None:
    """The counter the call recorded for the limit when it was decided; none for a call approved
    after a wait, whose record holds the counter its approval found."""
    if call.approval_id is not None:
        return None
    return next((c for c in call.limits if c.limit == limit.id and c.subject == whose and c.used is not None), None)


class ReplayedLimits:
    """The new policy's limits over one recorded run, call by call, in the order they are judged."""

    def __init__(self, policy: Policy, recorded: Policy, instants: Instants) -> None:
        self._policy = policy
        self._recorded = {
            limit.id: _measure(limit) for tool in recorded.tools.values() for limit in tool.limits
        }  # fmt: skip
        self._instants = instants
        # By limit and subject: a counter reads only its own.
        self._charges: defaultdict[tuple[str, str], list[_Charge]] = defaultdict(list)

    def _same_measure(self, limit: WindowLimit) -> bool:
        return self._recorded.get(limit.id) == _measure(limit)

    def _sum(
        self,
        limit: WindowLimit,
        whose: str,
        at: float | None,
        counts: bool,
        in_record: bool | None,
        before: tuple[int, int],
    ) -> Decimal:
        """What the charges so far add to the limit's counter at `at`: those that count now
        (`counts`), and that the recorded counter of the call at `before` holds or not
        (`in_record`; None: either). Every entry stamped after the window's start counts, as in
        the store (a call the history shows no instant of, or checked at no instant, counts)."""
        start = None if at is None else window_start(at, limit.seconds)
        return sum(
            (
                c.amount
                for c in self._charges[(limit.id, whose)]
                if c.counts is counts
                and (in_record is None or (c.held_at is not None and c.held_at < before) is in_record)
                and (start is None or c.at is None or c.at > start)
            ),
            Decimal(0),
        )

    def judge(self, call: CallRecord, context: CallContext, decision: Decision) -> tuple[Decision, str]:
        """The decision with the new limits' counters taken into account, and what to say of how
        they were counted ("" when every counter was read from the record)."""
        limits = limits_for(self._policy, context)
        # A call the rules deny never reaches the limits, live either.
        if not limits or decision.outcome is Outcome.DENY:
            return decision, ""
        place = (call.step, call.index)
        at = _stamp(self._instants.first.get(place))
        counters: list[CounterSeen] = []
        alone: list[str] = []
        for limit in limits:
            whose = subject(limit, context)
            adds = amount(limit, context)
            recorded = _recorded_counter(call, limit, whose) if self._same_measure(limit) else None
            if recorded is not None and recorded.used is not None:
                used = (
                    recorded.used
                    + self._sum(limit, whose, at, counts=True, in_record=False, before=place)
                    - self._sum(limit, whose, at, counts=False, in_record=True, before=place)
                )
                used = max(used, Decimal(0))
            else:
                alone.append(limit.id)
                used = self._sum(limit, whose, at, counts=True, in_record=None, before=place)
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
        note = (
            f"{', '.join(alone)} counted from this run's calls alone (other runs' calls in the window are not in its history)"
            if alone
            else ""
        )
        return verdict(self._policy, decision, limits, counters), note

    def settle(self, call: CallRecord, context: CallContext, *, counts: bool) -> None:
        """What the call adds to each counter, for the calls judged after it: whether it counts in
        the counterfactual (`counts`), and whether the recorded counters already hold it."""
        at = _stamp(self._instants.last.get((call.step, call.index)))
        for limit in limits_for(self._policy, context):
            adds = amount(limit, context)
            if adds is None:
                continue
            whose = subject(limit, context)
            # The recorded counters of the calls after it hold this call's charge when the store
            # held it then (committed when it ran, or held when it may have: never released), for
            # a limit counted the same way.
            held = self._same_measure(limit) and any(
                c.limit == limit.id and c.subject == whose and c.held for c in call.limits
            )
            if counts or held:
                held_at = (call.step, call.index) if held else None
                self._charges[(limit.id, whose)].append(_Charge(adds, at, counts, held_at))
