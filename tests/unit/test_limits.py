"""Windowed limits, the pure half (policy/limits.py): the sliding window's arithmetic, what a call
adds to a counter, what a full counter makes of the policy's decision, and how a policy file with
limits is validated and checked."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts.models import Effect, Mode, Outcome, Tier
from contracts.policy import WindowLimit
from contracts.policy_limits import CounterSeen, CounterUse, LimitCharge, LimitsHeld
from policy import CallContext, PolicyError, decide, load_policy, parse_policy
from policy.check import check, require_sound_rules
from policy.limits import (
    charges,
    counter_text,
    fits,
    from_micro,
    in_window,
    limits_for,
    over,
    seen,
    to_micro,
    verdict,
    window_start,
)
from runtime.settings import EXAMPLE_POLICY
from tests.conftest import policy_file
from tools.registry import load_registry

DAILY: dict[str, Any] = {
    "id": "refunds.daily",
    "sum": "amount_usd",
    "unit": "USD",
    "per": "requester",
    "window": "1d",
    "max": 1000,
    "effect": "require_approval",
}


def limited(tmp_path: Path, *limits: dict[str, Any]) -> Path:
    return policy_file(tmp_path / "limits.yaml", tools={"payments.create_refund": {"limits": list(limits)}})


def ctx(**kw: Any) -> CallContext:
    defaults: dict[str, Any] = dict(
        workspace="acme",
        agent="support",
        requested_by="u_alice",
        mode=Mode.AUTO,
        tool="payments.create_refund",
        effect=Effect.WRITE,
        tier=Tier.HIGH,
        args={"order_id": "ORD-1001", "amount_usd": "20.00"},
        facts={"refundable_usd": "180.00"},
    )
    return CallContext.model_validate(defaults | kw)


def found(limit: WindowLimit, call: CallContext, used: str) -> list[CounterSeen]:
    """The counters a call finds when the store holds `used` on each of its limits."""
    held = LimitsHeld(
        held=True,
        counters=[CounterUse(limit=c.limit, subject=c.subject, used=Decimal(used)) for c in charges([limit], call)],
    )
    return seen([limit], call, held)


# ---- the window -------------------------------------------------------------------------------


def test_an_entry_counts_until_its_window_has_passed_and_not_at_its_edge() -> None:
    """Sliding: a call made at t counts for a 1h limit until t + 3600, and no longer from then."""
    assert window_start(10_000.0, 3600) == 6400.0
    assert in_window(6400.5, 10_000.0, 3600)
    assert not in_window(6400.0, 10_000.0, 3600)
    assert in_window(10_000.0, 10_000.0, 3600)
    assert not in_window(10_000.5, 10_000.0, 3600)


@pytest.mark.parametrize(
    ("window", "seconds"), [("30m", 1800), ("1h", 3600), ("1d", 86_400), ("7d", 604_800), ("1w", 604_800)]
)
def test_windows_are_read_in_seconds(window: str, seconds: int) -> None:
    """A window is a number and a unit: s, m, h, d or w."""
    assert WindowLimit.model_validate(DAILY | {"window": window}).seconds == seconds


def test_rounding_never_lets_a_call_pass_that_the_exact_amounts_would_stop() -> None:
    """Charges round up and maxima round down to millionths, so the counter errs on the safe side."""
    assert to_micro(Decimal("0.0000001"), up=True) == 1
    assert to_micro(Decimal("0.0000019"), up=False) == 1
    assert from_micro(1_500_000) == Decimal("1.5")
    charge = LimitCharge(limit="l", subject="s", amount=Decimal("400"), max=Decimal("1000"), window_s=60)
    assert fits(to_micro(Decimal("600"), up=True), charge)
    assert not fits(to_micro(Decimal("600.000001"), up=True), charge)


# ---- what a call adds ---------------------------------------------------------------------------


def test_a_sum_reads_the_argument_a_fact_or_counts_one(tmp_path: Path) -> None:
    """`sum` reads an argument, `sum_fact` a previewed fact, `count` adds 1; per scopes the counter."""
    call = ctx(args={"amount_usd": "120.50"}, facts={"refundable_usd": "80"})
    by_arg = WindowLimit.model_validate(DAILY)
    by_fact = WindowLimit.model_validate(DAILY | {"id": "f", "sum": None, "sum_fact": "refundable_usd", "per": "agent"})
    by_call = WindowLimit.model_validate(DAILY | {"id": "c", "sum": None, "count": True, "per": "workspace"})
    assert [(c.limit, c.subject, c.amount) for c in charges([by_arg, by_fact, by_call], call)] == [
        ("refunds.daily", "u_alice", Decimal("120.50")),
        ("f", "support", Decimal("80")),
        ("c", "*", Decimal("1")),
    ]


@pytest.mark.parametrize("value", [None, "lots", "-5", "NaN", True, {"usd": 5}])
def test_an_amount_that_cannot_be_read_counts_as_over(value: Any) -> None:
    """A missing, non-numeric, negative or non-finite amount is not sent to the store: the limit
    counts the call as past its max (fail closed)."""
    call = ctx(args={} if value is None else {"amount_usd": value})
    limit = WindowLimit.model_validate(DAILY)
    assert charges([limit], call) == []
    (counter,) = seen([limit], call, None)
    assert over(counter)
    assert counter_text(counter) == (
        "refunds.daily: the call's amount cannot be read, so it counts as over 1,000 USD per u_alice per 1d"
    )


def test_only_the_limits_whose_when_and_workspaces_match_count_the_call(tmp_path: Path) -> None:
    """`when` selects the calls a limit counts; `workspaces` where it applies."""
    policy = load_policy(
        limited(
            tmp_path,
            DAILY,
            DAILY | {"id": "big", "when": {"arg": "amount_usd", "gt": 100}},
            DAILY | {"id": "sandbox-only", "workspaces": ["sandbox"]},
        )
    )
    assert [limit.id for limit in limits_for(policy, ctx(args={"amount_usd": "20"}))] == ["refunds.daily"]
    assert [limit.id for limit in limits_for(policy, ctx(args={"amount_usd": "150"}))] == ["big", "refunds.daily"]


# ---- what the counters decide --------------------------------------------------------------------


def test_a_call_that_takes_the_counter_past_its_max_goes_to_approval(tmp_path: Path) -> None:
    """Under the max the decision stands; past it, the call needs approval, the limit named with
    its counter ("1,200 of 1,000 USD per u_alice per 1d")."""
    policy = load_policy(limited(tmp_path, DAILY))
    limit = policy.tools["payments.create_refund"].limits[0]
    call = ctx(args={"amount_usd": "40"}, facts={"refundable_usd": "180"})
    allowed = decide(policy, call)
    assert allowed.outcome is Outcome.ALLOW
    assert verdict(policy, allowed, [limit], found(limit, call, "960")) == allowed
    sent = verdict(policy, allowed, [limit], found(limit, call, "1160"))
    assert (sent.outcome, sent.rule, sent.tier) == (Outcome.APPROVE, "refunds.daily", Tier.HIGH)
    assert sent.reason == "refunds.daily: 1,200 of 1,000 USD per u_alice per 1d"
    assert (sent.approvals_required, sent.approver_roles) == (1, ["approver"])


def test_a_deny_limit_denies_and_wins_over_approval(tmp_path: Path) -> None:
    """A limit with `effect: deny` refuses the call, even one that needed approval anyway."""
    payees = DAILY | {"id": "payees.weekly", "sum": None, "count": True, "unit": "payees", "window": "7d", "max": 5}
    policy = load_policy(limited(tmp_path, payees | {"effect": "deny", "reason": "at most 5 new payees a week"}))
    limit = policy.tools["payments.create_refund"].limits[0]
    call = ctx(mode=Mode.APPROVE)
    needs = decide(policy, call)
    assert needs.outcome is Outcome.APPROVE
    denied = verdict(policy, needs, [limit], found(limit, call, "5"))
    assert (denied.outcome, denied.rule) == (Outcome.DENY, "payees.weekly")
    assert denied.reason == "at most 5 new payees a week: payees.weekly: 6 of 5 payees per u_alice per 7d"
    assert verdict(policy, needs, [limit], found(limit, call, "4")) == needs


def test_a_limit_names_the_tier_that_approves_and_never_lowers_one(tmp_path: Path) -> None:
    """`tier: critical` asks the critical tier's approvers; a limit's tier below the call's own
    leaves the call's tier; a call already awaiting approval keeps its rule and gains the reason."""
    policy = load_policy(limited(tmp_path, DAILY | {"tier": "critical"}, DAILY | {"id": "low", "tier": "low"}))
    by_id = {limit.id: limit for limit in policy.tools["payments.create_refund"].limits}
    critical, low = by_id["refunds.daily"], by_id["low"]
    call = ctx(args={"amount_usd": "40"})
    allowed = decide(policy, call)
    raised = verdict(policy, allowed, [critical], found(critical, call, "990"))
    assert (raised.tier, raised.approvals_required, raised.required_role) == (Tier.CRITICAL, 2, "admin")
    kept = verdict(policy, allowed, [low], found(low, call, "990"))
    assert kept.tier is Tier.HIGH
    waiting = decide(policy, ctx(mode=Mode.APPROVE, args={"amount_usd": "40"}))
    both = verdict(policy, waiting, [low], found(low, call, "990"))
    assert (both.rule, both.tier) == (waiting.rule, Tier.HIGH)
    assert both.reason == f"{waiting.reason}; low: 1,030 of 1,000 USD per u_alice per 1d"


def test_a_denied_call_stays_denied() -> None:
    """Limits never loosen a decision: a denial is not turned into an approval."""
    policy = load_policy(EXAMPLE_POLICY)
    limit = WindowLimit.model_validate(DAILY)
    denied = decide(policy, ctx(args={"amount_usd": "500"}))
    assert denied.outcome is Outcome.DENY
    assert verdict(policy, denied, [limit], found(limit, ctx(args={"amount_usd": "500"}), "990")) == denied


# ---- the policy file -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"count": True},
            "limit refunds.daily needs exactly one of sum (an argument), sum_fact (a fact) or count: true; got sum, count",
        ),
        ({"window": "1 day"}, "window: String should match pattern"),
        ({"window": "400d"}, "limit refunds.daily: a window is at most 366d; got 400d"),
        ({"effect": "deny", "tier": "high"}, "limit refunds.daily: tier goes with effect require_approval, not deny"),
        ({"per": "team"}, "per: Input should be 'requester', 'agent' or 'workspace'"),
        ({"max": -1}, "max: Input should be greater than or equal to 0"),
        ({"effect": "auto"}, "effect: Input should be 'deny' or 'require_approval'"),
    ],
)
def test_a_bad_limit_is_refused_at_load_in_one_line(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    """Each mistake in a limit is named on one line, with the file's line number."""
    with pytest.raises(PolicyError) as error:
        load_policy(limited(tmp_path, DAILY | change))
    lines = str(error.value).splitlines()
    assert len(lines) == 1, lines
    assert message in lines[0]
    assert lines[0].startswith(f"{tmp_path / 'limits.yaml'}:")


def test_a_limit_id_may_not_repeat_a_rule_id(tmp_path: Path) -> None:
    """Limits and rules share one namespace of ids: a record's rule names one of them."""
    with pytest.raises(PolicyError, match=r"rule ids must be unique; repeated: \['refund.max-200'\]"):
        load_policy(limited(tmp_path, DAILY | {"id": "refund.max-200"}))


def test_the_check_names_a_limit_counting_an_argument_or_fact_the_tool_does_not_have(tmp_path: Path) -> None:
    """`airlock policy check`: a limit's sum, sum_fact and when must name the tool's own, and what it
    sums must be a number."""
    registry = load_registry(["tools.backoffice"])
    path = limited(
        tmp_path,
        DAILY | {"sum": "amount"},
        DAILY | {"id": "by-fact", "sum": None, "sum_fact": "refundable"},
        DAILY | {"id": "fine", "sum": None, "sum_fact": "refundable_usd", "when": {"arg": "reason", "not_in": ["x"]}},
        DAILY | {"id": "when", "when": {"arg": "order", "not_in": ["x"]}},
        DAILY | {"id": "text", "sum": "reason"},
    )
    errors = [f.message for f in check(load_policy(path), registry.catalog()) if f.level == "error"]
    assert errors == [
        "tools.payments.create_refund.limits.refunds.daily.sum: payments.create_refund has no argument amount; "
        "arguments: amount_usd, order_id, reason",
        "tools.payments.create_refund.limits.by-fact.sum_fact: payments.create_refund's preview gives no fact "
        "refundable; facts: order_total_usd, refundable_usd",
        "tools.payments.create_refund.limits.when.when: arg 'order' is not an argument of payments.create_refund "
        "(amount_usd, order_id, reason)",
        "tools.payments.create_refund.limits.text.sum: payments.create_refund's argument reason is a string, "
        "and sum adds numbers",
    ]


def test_a_worker_refuses_a_limit_that_cannot_count_what_it_names(tmp_path: Path) -> None:
    """What `airlock policy check` finds wrong in a limit, the worker refuses to start with: such a
    limit would fail every call of its tool closed instead of counting."""
    registry = load_registry(["tools.backoffice"])
    path = limited(tmp_path, DAILY | {"sum": "reason"})
    with pytest.raises(PolicyError) as refused:
        require_sound_rules(load_policy(path), registry.catalog(), str(path))
    assert str(refused.value) == (
        f"{path}: tools.payments.create_refund.limits.refunds.daily.sum: payments.create_refund's argument "
        "reason is a string, and sum adds numbers"
    )
    require_sound_rules(load_policy(limited(tmp_path, DAILY)), registry.catalog(), str(path))


def test_a_policy_with_limits_parses_and_hashes_them() -> None:
    """A limit is part of what a policy decides: it changes the policy's hash."""
    text = EXAMPLE_POLICY.read_text()
    marker = "  payments.create_refund:\n"
    with_limit = text.replace(
        marker,
        marker + "    limits:\n      - {id: refunds.daily, sum: amount_usd, window: 1d, max: 1000, effect: deny}\n",
        1,
    )
    assert parse_policy(with_limit).content_hash() != parse_policy(text).content_hash()


def test_the_documented_limits_load_and_name_what_their_tools_take(tmp_path: Path) -> None:
    """The examples in docs/policy.md ("Windowed limits") are a valid policy's limits, and each
    names an argument its tool takes."""
    doc = (Path(__file__).parents[2] / "docs" / "policy.md").read_text()
    section = doc.split("## Windowed limits", 1)[1]
    example = yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0])
    path = policy_file(tmp_path / "documented.yaml", **example)
    registry = load_registry(["tools.backoffice", "tools.examples.banking", "tools.examples.messaging"])
    policy = load_policy(path)
    assert {tool for tool, tp in policy.tools.items() if tp.limits} == {
        "payments.create_refund",
        "bank.add_payee",
        "chat.post_message",
    }
    findings = [f.message for f in check(policy, registry.catalog()) if "limits" in f.message]
    assert findings == []
