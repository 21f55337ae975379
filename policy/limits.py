"""Windowed limits, the pure half: which limits count a call, what the call adds to each counter,
the window arithmetic the store applies, and what the counters a run found make of the policy's
decision. No I/O and no clock: the control store (activities/limit_ledger.py) holds the counters
and checks them in one transaction.

Windows slide: a counter's total at time `now` is what its calls added after `now - window`
(`window_start`); an entry stamped exactly at the start has left the window. A call reserved is
stamped when it was reserved, and when it is settled as run, then: a counter never forgets a call
earlier than its window says.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from contracts.models import Decision, Outcome, Tier
from contracts.policy import Policy, WindowLimit
from contracts.policy_limits import WHOLE_WORKSPACE, CounterSeen, LimitCharge, LimitsHeld
from policy.engine import CallContext, as_number, matches, value_at

# The store keeps amounts in millionths of the limit's unit, as integers: sums stay exact.
MICRO = Decimal(1_000_000)


# ---- window arithmetic ----------------------------------------------------------------------


def window_start(now: float, window_s: int) -> float:
    """The instant after which entries count at `now`; an entry stamped at it, or before, does not."""
    return now - window_s


def in_window(stamped_at: float, now: float, window_s: int) -> bool:
    return window_start(now, window_s) < stamped_at <= now


def to_micro(amount: Decimal, *, up: bool) -> int:
    """An amount in millionths: a charge rounds up and a max rounds down, so that rounding never
    lets a call through that the exact amounts would stop."""
    return int((amount * MICRO).to_integral_value(rounding=ROUND_CEILING if up else ROUND_FLOOR))


def from_micro(micro: int) -> Decimal:
    return (Decimal(micro) / MICRO).normalize()


def fits(used_micro: int, charge: LimitCharge) -> bool:
    """Whether the counter takes the charge: at most its max once the charge is added."""
    return used_micro + to_micro(charge.amount, up=True) <= to_micro(charge.max, up=False)


# ---- which limits, and what a call adds ------------------------------------------------------


def limits_for(policy: Policy, call: CallContext) -> list[WindowLimit]:
    """The limits that count this call: its tool's, in its workspace, whose `when` matches. A
    `when` that cannot be evaluated counts the call (fail closed), as a rule that denies matches."""
    tool_policy = policy.tools.get(call.tool)
    if tool_policy is None:
        return []
    return sorted(
        (
            limit
            for limit in tool_policy.limits
            if (limit.workspaces is None or call.workspace in limit.workspaces)
            and (limit.when is None or matches(limit.when, call))
        ),
        key=lambda limit: limit.id,
    )


def subject(limit: WindowLimit, call: CallContext) -> str:
    """Whose counter the call adds to: its requester's, its agent's, or the whole workspace's."""
    if limit.per == "requester":
        return call.requested_by
    if limit.per == "agent":
        return call.agent
    return WHOLE_WORKSPACE


def amount(limit: WindowLimit, call: CallContext) -> Decimal | None:
    """What the call adds: 1 for `count`, else the argument's or fact's value; None when that is
    missing, not a number, negative or not finite (the limit then counts the call as over)."""
    if limit.count:
        return Decimal(1)
    value = value_at(call.args, limit.sum) if limit.sum is not None else call.facts.get(limit.sum_fact or "")
    number = as_number(value)  # the engine's reading: a bool or a non-finite value is no number
    return number if number is not None and number >= 0 else None


def charges(limits: list[WindowLimit], call: CallContext) -> list[LimitCharge]:
    """What the call adds to each limit's counter whose amount can be read."""
    found = []
    for limit in limits:
        value = amount(limit, call)
        if value is not None:
            found.append(
                LimitCharge(
                    limit=limit.id, subject=subject(limit, call), amount=value, max=limit.max, window_s=limit.seconds
                )
            )
    return found


def seen(limits: list[WindowLimit], call: CallContext, held: LimitsHeld | None) -> list[CounterSeen]:
    """Each limit's counter as the call found it, from the store's answer (`held`, None when no
    charge could be read). A limit whose amount cannot be read is shown as over its max."""
    used = {c.limit: c.used for c in held.counters} if held is not None else {}
    return [
        CounterSeen(
            limit=limit.id,
            per=limit.per,
            subject=subject(limit, call),
            used=used.get(limit.id),
            amount=amount(limit, call) if limit.id in used else None,
            max=limit.max,
            window=limit.window,
            unit=limit.shown_unit,
            held=held is not None and held.held and limit.id in used,
        )
        for limit in limits
    ]


# ---- what the counters decide ----------------------------------------------------------------


def over(counter: CounterSeen) -> bool:
    """Whether the call would take the counter past its max (or its amount cannot be read)."""
    if counter.used is None or counter.amount is None:
        return True
    return counter.used + counter.amount > counter.max


def number(value: Decimal) -> str:
    """1200 → "1,200"; 12.50 → "12.5"."""
    if value == value.to_integral_value():
        return f"{int(value):,}"
    return f"{value.normalize():,f}"


def counter_text(counter: CounterSeen) -> str:
    """The counter as people read it: "refunds.daily: 1,200 of 1,000 USD per u_alice per 1d"."""
    unit = f" {counter.unit}" if counter.unit else ""
    whose = {"requester": counter.subject, "agent": f"agent {counter.subject}", "workspace": "workspace"}[counter.per]
    per = f"per {whose} per {counter.window}"
    if counter.used is None or counter.amount is None:
        return (
            f"{counter.limit}: the call's amount cannot be read, so it counts as over {number(counter.max)}{unit} {per}"
        )
    return f"{counter.limit}: {number(counter.used + counter.amount)} of {number(counter.max)}{unit} {per}"


def _reason(limit: WindowLimit, counter: CounterSeen) -> str:
    return f"{limit.reason}: {counter_text(counter)}" if limit.reason else counter_text(counter)


def verdict(policy: Policy, decision: Decision, limits: list[WindowLimit], counters: list[CounterSeen]) -> Decision:
    """The decision once the counters are known; limits never loosen it. A limit past its max with
    `deny` denies the call (the rule is the limit's id). With `require_approval` it sends the call
    for approval by the limit's tier (the call's own when it names none, and never a lower one); a
    call that needed approval already waits once, under the stricter of the two tiers."""
    by_id = {limit.id: limit for limit in limits}
    full = [(by_id[c.limit], c) for c in sorted(counters, key=lambda c: c.limit) if c.limit in by_id and over(c)]
    if not full or decision.outcome is Outcome.DENY:
        return decision
    denies = [(limit, c) for limit, c in full if limit.effect == "deny"]
    if denies:
        limit, counter = denies[0]
        return decision.model_copy(
            update={
                "outcome": Outcome.DENY,
                "rule": limit.id,
                "reason": _reason(limit, counter),
                "approvals_required": 0,
                "approver_roles": [],
                "required_role": None,
                "timeout_s": 0,
                "matched_rules": [limit.id for limit, _ in denies],
            }
        )
    reasons = "; ".join(_reason(limit, c) for limit, c in full)
    tier = max([decision.tier, *(limit.tier or decision.tier for limit, _ in full)], key=list(Tier).index)
    requirement = policy.tiers[tier]
    update: dict[str, Any] = {
        "outcome": Outcome.APPROVE,
        "tier": tier,
        "approvals_required": requirement.approvals,
        "approver_roles": list(requirement.roles),
        "required_role": requirement.require_role,
        "timeout_s": requirement.timeout_s,
    }
    if decision.outcome is Outcome.APPROVE:
        # Its own rule stands; the limits add to the reason, and may raise the tier.
        update |= {
            "reason": f"{decision.reason}; {reasons}",
            "matched_rules": [*decision.matched_rules, *(limit.id for limit, _ in full)],
        }
        if tier == decision.tier:
            return decision.model_copy(update={k: update[k] for k in ("reason", "matched_rules")})
        return decision.model_copy(update=update)
    return decision.model_copy(
        update=update | {"rule": full[0][0].id, "reason": reasons, "matched_rules": [limit.id for limit, _ in full]}
    )
