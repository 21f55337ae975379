"""Counterfactual replay with windowed limits, over a committed history: two refunds of 40 USD
under a 100 USD a day limit, a third (30 USD) past it sent for approval and approved, a fourth
denied by a limit of 3 refunds an hour in the workspace (tests/history_scenarios.py)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from airlock.counterfactual import Counterfactual, under_model, under_policy
from contracts.model_io import ModelDecision, ModelRequest, ProposedCall
from contracts.models import CallStatus
from contracts.policy import Policy, Rule, WindowLimit
from contracts.policy_limits import CounterSeen
from recorder.flight_recorder import Recording, load_history, reconstruct

HISTORY = Path(__file__).resolve().parents[1] / "histories" / "windowed_limits.json"
REFUND = "payments.create_refund"


@pytest.fixture(scope="module")
async def recording() -> Recording:
    return await reconstruct(load_history(HISTORY))


def with_limits(rec: Recording, change: Any) -> Policy:
    """The run's own policy, with the refund tool's limits as `change` makes them of the recorded ones."""
    policy = rec.memory.context.policy
    tool = policy.tools[REFUND]
    return policy.model_copy(
        update={"tools": {**policy.tools, REFUND: tool.model_copy(update={"limits": change(tool.limits)})}}
    )


def daily(limits: list[WindowLimit]) -> WindowLimit:
    return next(limit for limit in limits if limit.id.startswith("refunds.daily"))


def labels(cf: Counterfactual) -> list[tuple[str, str, str]]:
    return [(str(c.args.get("amount_usd")), c.before.label, c.after.label) for c in cf.calls]


async def test_the_recorded_policy_changes_nothing(recording: Recording) -> None:
    """The limits the run had decide again as they did: the approval and the denial they caused
    stand (without the limits they read allowed)."""
    cf = under_policy(recording, recording.memory.context.policy)
    assert labels(cf) == [
        ("40.00", "allowed", "allowed"),
        ("40.00", "allowed", "allowed"),
        ("30.00", "approved", "approved"),
        ("10.00", "denied", "denied"),
    ]
    assert cf.summary == {"unchanged": 4}
    assert cf.calls[3].after.rule is not None and cf.calls[3].after.rule.startswith("refunds.hourly")


async def test_a_lower_max_reads_the_counters_the_calls_recorded(recording: Recording) -> None:
    """The same limit with a max of 70 USD: the second refund finds 40 USD counted (as the store
    said) and 80 would pass 70, so it waits for approval; nothing says the run was counted alone."""
    policy = with_limits(recording, lambda limits: [
        daily(limits).model_copy(update={"max": Decimal(70)}) if limit is daily(limits) else limit for limit in limits
    ])  # fmt: skip
    cf = under_policy(recording, policy)
    assert [(c.args["amount_usd"], c.before.label, c.after.label) for c in cf.changed] == [
        ("40.00", "allowed", "needs approval")
    ]
    note = cf.changed[0].note
    assert "80 of 70 USD per u_alice per 1d" in note
    assert "this run's calls alone" not in note


async def test_a_new_limit_counts_this_runs_own_calls_and_says_so(recording: Recording) -> None:
    """A limit the run never had (2 refunds a day per requester, deny) counts the refunds the new
    policy lets run: the third finds 2 and is denied, the fourth too."""
    extra = WindowLimit(id="refunds.two-a-day", count=True, window="1d", max=2, effect="deny", unit="refunds")
    cf = under_policy(recording, with_limits(recording, lambda limits: [*limits, extra]))
    assert labels(cf)[2:] == [("30.00", "approved", "denied"), ("10.00", "denied", "denied")]
    assert cf.calls[2].after.rule == "refunds.two-a-day"
    assert "refunds.two-a-day: 3 of 2 refunds per u_alice per 1d" in cf.calls[2].note
    assert "counted from this run's calls alone" in cf.calls[2].note


async def test_a_new_limit_forgets_calls_older_than_its_window(recording: Recording) -> None:
    """The same new limit over 1 hour, had each call been decided 2 hours after the one before:
    no call finds another in its window, and none is denied by it."""
    memory = recording.memory
    first = memory.timeline[0].at
    spaced = recording.model_copy(
        update={
            "memory": memory.model_copy(
                update={
                    "timeline": [
                        e.model_copy(update={"at": first + timedelta(hours=2 * e.step)}) for e in memory.timeline
                    ]
                }
            )
        }
    )
    extra = WindowLimit(id="refunds.two-an-hour", count=True, window="1h", max=1, effect="deny")
    policy = with_limits(spaced, lambda limits: [*limits, extra])
    assert all(c.after.rule != "refunds.two-an-hour" for c in under_policy(spaced, policy).calls)
    # Within the hour, the second call already finds the first.
    assert under_policy(recording, policy).calls[1].after.rule == "refunds.two-an-hour"


async def test_a_call_denied_under_the_new_policy_adds_nothing(recording: Recording) -> None:
    """A new rule denies refunds of exactly 40 USD: they never run, so a new limit of 1 refund a
    day counts only what the new policy let run, and the 30 USD refund is the first it counts."""
    policy = with_limits(recording, lambda limits: [
        WindowLimit(id="refunds.one-a-day", count=True, window="1d", max=1, effect="deny")
    ])  # fmt: skip
    tool = policy.tools[REFUND]
    rule = Rule.model_validate({"id": "refund.not-40", "effect": "deny", "when": {"arg": "amount_usd", "eq": 40}})
    policy = policy.model_copy(
        update={"tools": {**policy.tools, REFUND: tool.model_copy(update={"rules": [*tool.rules, rule]})}}
    )
    cf = under_policy(recording, policy)
    assert [(c.after.label, c.after.rule) for c in cf.calls] == [
        ("denied", "refund.not-40"),
        ("denied", "refund.not-40"),
        ("allowed", "agent.capabilities"),
        ("denied", "refunds.one-a-day"),
    ]


def hourly(limits: list[WindowLimit]) -> WindowLimit:
    return next(limit for limit in limits if limit.id.startswith("refunds.hourly"))


def changed(limits: list[WindowLimit], **maxes: int) -> list[WindowLimit]:
    """The recorded limits with new maxes (`daily=`, `hourly=`)."""
    new = {daily(limits).id: maxes.get("daily"), hourly(limits).id: maxes.get("hourly")}
    return [
        limit if new[limit.id] is None else limit.model_copy(update={"max": Decimal(new[limit.id])}) for limit in limits
    ]


def retimed(rec: Recording, when: Any) -> Recording:
    """The same run, its timeline's instants as `when(entry, first)` gives them."""
    memory = rec.memory
    first = memory.timeline[0].at
    timeline = [e.model_copy(update={"at": when(e, first)}) for e in memory.timeline]
    return rec.model_copy(update={"memory": memory.model_copy(update={"timeline": timeline})})


async def test_a_recorded_counter_adds_the_calls_only_the_new_policy_lets_run(recording: Recording) -> None:
    """A fifth refund like the fourth (which the hourly limit denied, so the store never counted
    it): with the hourly max at 4 the fourth runs, and the fifth finds it on top of what the
    store recorded."""
    fourth = recording.memory.calls[3]
    rec = recording.model_copy(
        update={
            "memory": recording.memory.model_copy(
                update={"calls": [*recording.memory.calls, fourth.model_copy(update={"step": 5})]}
            )
        }
    )
    cf = under_policy(rec, with_limits(rec, lambda limits: changed(limits, daily=1000, hourly=4)))
    assert [(c.after.label, c.after.rule) for c in cf.calls[3:]] == [
        ("allowed", "agent.capabilities"),
        ("denied", hourly(rec.memory.context.policy.tools[REFUND].limits).id),
    ]
    assert "5 of 4 calls per workspace per 1h" in cf.calls[4].note


async def test_an_approved_call_counts_from_when_it_ran_not_when_it_was_decided(recording: Recording) -> None:
    """The 30 USD refund is decided at T and approved and run 50 minutes later; the 10 USD one comes
    at T+70m. A new limit of one refund an hour finds the approved one in its hour."""

    def when(e: Any, first: Any) -> Any:
        if e.step < 3:
            return first - timedelta(hours=5)
        if e.step == 3:
            return first if e.kind == "decision" else first + timedelta(minutes=50)
        return first + timedelta(minutes=70)

    rec = retimed(recording, when)
    extra = WindowLimit(id="refunds.one-an-hour", count=True, window="1h", max=1, effect="deny")
    cf = under_policy(rec, with_limits(rec, lambda limits: [*changed(limits, hourly=10), extra]))
    assert (cf.calls[3].after.label, cf.calls[3].after.rule) == ("denied", "refunds.one-an-hour")


async def test_an_approved_calls_counter_is_counted_again_not_read(recording: Recording) -> None:
    """The first two refunds come 2 h before the third, which waits 23 h for its approval: the
    counter the approval found no longer holds them, so it is not read for the decision, which
    counts the run's own calls instead. The recorded policy still sends it for approval, and a
    daily limit that denies denies it."""

    def when(e: Any, first: Any) -> Any:
        if e.step < 3:
            return first - timedelta(hours=2)
        if e.step == 3 and e.kind != "decision":
            return first + timedelta(hours=23)
        return first + timedelta(hours=23, minutes=1) if e.step > 3 else first

    rec = retimed(recording, when)
    # What the approval's hold found 23 h on: the first two refunds had left the day.
    third = rec.memory.calls[2]
    found = [
        c.model_copy(update={"used": Decimal(0)}) if c.limit.startswith("refunds.daily") else c for c in third.limits
    ]
    calls = [*rec.memory.calls[:2], third.model_copy(update={"limits": found}), *rec.memory.calls[3:]]
    rec = rec.model_copy(update={"memory": rec.memory.model_copy(update={"calls": calls})})
    assert under_policy(rec, rec.memory.context.policy).summary == {"unchanged": 4}
    deny = with_limits(rec, lambda limits: [
        daily(limits).model_copy(update={"effect": "deny"}) if limit is daily(limits) else limit for limit in limits
    ])  # fmt: skip
    judged = under_policy(rec, deny).calls[2]
    assert (judged.after.label, judged.after.rule) == (
        "denied",
        daily(rec.memory.context.policy.tools[REFUND].limits).id,
    )
    assert "110 of 100 USD" in judged.note


async def test_a_call_checked_earlier_than_another_ran_still_finds_it(recording: Recording) -> None:
    """The store counts every entry after the window's start: a call whose decision the timeline
    shows before the previous call's end still finds that call (as when a new model proposes the
    recorded calls in another order)."""
    rec = retimed(recording, lambda e, first: first + timedelta(minutes=10 if e.step == 1 else 0))
    extra = WindowLimit(id="refunds.one-a-day", count=True, window="1d", max=1, effect="deny")
    cf = under_policy(rec, with_limits(rec, lambda limits: [*limits, extra]))
    assert (cf.calls[1].after.label, cf.calls[1].after.rule) == ("denied", "refunds.one-a-day")


async def test_an_allowed_call_says_which_limits_were_counted_from_the_run_alone(recording: Recording) -> None:
    """The hourly limit renamed (so its recorded counters are not its own) with a max of 4: the
    fourth refund is allowed on this run's own count, and the line under it names that limit,
    not the daily one, which was read from the record."""
    renamed = with_limits(recording, lambda limits: [
        hourly(limits).model_copy(update={"id": "refunds.hourly-v2", "max": Decimal(4)}) if limit is hourly(limits)
        else limit.model_copy(update={"max": Decimal(1000)})
        for limit in limits
    ])  # fmt: skip
    fourth = under_policy(recording, renamed).calls[3]
    assert (fourth.before.label, fourth.after.label) == ("denied", "allowed")
    assert fourth.note == (
        "refunds.hourly-v2 counted from this run's calls alone (other runs' calls in the window are not in its history)"
    )


def with_calls(rec: Recording, calls: list[Any], timeline: list[Any] | None = None) -> Recording:
    update: dict[str, Any] = {"calls": calls}
    if timeline is not None:
        update["timeline"] = timeline
    return rec.model_copy(update={"memory": rec.memory.model_copy(update=update)})


async def test_what_the_store_held_decides_what_a_recorded_counter_holds(recording: Recording) -> None:
    """A call whose tool gave up keeps its charges held in the store (later counters hold it): it
    is not counted twice. A call that ran with no charge held (its counter shows none) is not
    taken out of counters that never held it."""
    calls = recording.memory.calls
    failed = calls[1].model_copy(update={"status": CallStatus.FAILED, "error": "the tool is unavailable"})
    cf = under_policy(
        with_calls(recording, [calls[0], failed, *calls[2:]]),
        with_limits(recording, lambda limits: changed(limits, daily=1000, hourly=4)),
    )
    assert (cf.calls[3].after.label, cf.calls[3].after.rule) == ("allowed", "agent.capabilities")

    unheld = calls[2].model_copy(update={"limits": [c.model_copy(update={"held": False}) for c in calls[2].limits]})
    fourth = calls[3].model_copy(
        update={
            "limits": [
                c.model_copy(update={"used": c.used - (30 if c.limit.startswith("refunds.daily") else 1)})
                for c in calls[3].limits
            ]
        }
    )
    rule = Rule.model_validate({"id": "refund.not-30", "effect": "deny", "when": {"arg": "amount_usd", "eq": 30}})
    policy = with_limits(
        recording, lambda limits: [daily(limits).model_copy(update={"max": Decimal(85), "effect": "deny"})]
    )
    tool = policy.tools[REFUND]
    policy = policy.model_copy(
        update={"tools": {**policy.tools, REFUND: tool.model_copy(update={"rules": [*tool.rules, rule]})}}
    )
    cf = under_policy(with_calls(recording, [*calls[:2], unheld, fourth]), policy)
    assert (cf.calls[3].after.label, cf.calls[3].after.rule) == ("denied", daily(tool.limits).id)
    assert "90 of 85 USD" in cf.calls[3].note


class Proposes:
    """A model that proposes, at each step, the calls given for it."""

    def __init__(self, by_step: dict[int, list[tuple[str, dict[str, Any]]]]) -> None:
        self.by_step = by_step

    async def decide(self, request: ModelRequest) -> ModelDecision:
        calls = [
            ProposedCall(call_id=f"c{request.step}_{i}", tool=t, args=a)
            for i, (t, a) in enumerate(self.by_step.get(request.step, []))
        ]
        return ModelDecision(calls=calls, model="proposes")


async def test_a_new_models_order_and_repeats_do_not_loosen_a_recorded_counter(recording: Recording) -> None:
    """Two refunds in one step, A (40 USD) then B (50 USD), with 30 USD of other runs' in the day:
    A found 30, B 70. A new rule denies B, and the day's max is 60. Proposed B first, A still
    finds 70 (B's charge was in the store before A's counter only in B's own, later, record), as
    in the recorded order; and the same refund proposed twice is judged twice, not read twice."""
    m = recording.memory

    def found(call: Any, used: int) -> list[Any]:
        return [
            c.model_copy(update={"used": Decimal(used)}) if c.limit.startswith("refunds.daily") else c
            for c in call.limits
        ]

    a = m.calls[0].model_copy(update={"limits": found(m.calls[0], 30)})
    b = m.calls[1].model_copy(
        update={
            "step": 1,
            "index": 1,
            "args": {**m.calls[1].args, "amount_usd": "50.00"},
            "limits": found(m.calls[1], 70),
        }
    )
    timeline = [
        e.model_copy(update={"step": 1, "call_index": 1}) if e.step == 2 and e.call_index == 0 else e
        for e in m.timeline
        if e.step != 2 or e.call_index is not None
    ]
    rec = with_calls(recording, [a, b], timeline)
    rule = Rule.model_validate({"id": "refund.not-50", "effect": "deny", "when": {"arg": "amount_usd", "eq": 50}})
    policy = with_limits(rec, lambda limits: [daily(limits).model_copy(update={"max": Decimal(60), "effect": "deny"})])
    tool = policy.tools[REFUND]
    policy = policy.model_copy(
        update={"tools": {**policy.tools, REFUND: tool.model_copy(update={"rules": [*tool.rules, rule]})}}
    )
    in_order = under_policy(rec, policy)
    reversed_ = await under_model(rec, policy, Proposes({1: [(b.tool, b.args), (a.tool, a.args)]}), "proposes", None)
    for cf in (in_order, reversed_):
        [judged_a] = [c for c in cf.calls if c.args["amount_usd"] == "40.00"]
        assert (judged_a.after.label, judged_a.after.rule) == ("denied", daily(tool.limits).id)
        assert "70 of 60 USD" in judged_a.note

    # (Without the refundable-amount rule, which a call no preview ran for fails closed on.)
    twice = with_limits(rec, lambda limits: [daily(limits).model_copy(update={"max": Decimal(70), "effect": "deny"})])
    plain = twice.tools[REFUND].model_copy(update={"rules": [r for r in tool.rules if r.when.gt_fact is None]})
    twice = twice.model_copy(update={"tools": {**twice.tools, REFUND: plain}})
    cf = await under_model(
        with_calls(recording, m.calls[:1]), twice, Proposes({1: [(a.tool, a.args), (a.tool, a.args)]}), "proposes", None
    )
    assert [(c.after.label, c.after.rule) for c in cf.calls] == [
        ("allowed", "agent.capabilities"),
        ("denied", daily(tool.limits).id),
    ]


@pytest.mark.parametrize("used", ["NaN", "-Infinity", "-1"])
def test_a_record_read_back_with_a_counter_no_store_holds_is_refused(used: str) -> None:
    """A history file's counter that is not a finite amount of at least 0 (no store sums to one)
    is refused as the record is read, before a comparison with it could raise."""
    with pytest.raises(ValidationError, match="used"):
        CounterSeen.model_validate({"limit": "a", "subject": "u_alice", "used": used, "max": 1, "window": "1d"})
