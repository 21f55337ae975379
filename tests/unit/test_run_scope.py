"""A run's own scope: a subset of its agent's capabilities and rules that only narrow."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from contracts.models import Effect, Mode, Outcome, RunInput, Tier
from contracts.policy import Condition, RunRule
from policy import CallContext, decide, load_policy
from policy.engine import may_start
from runtime.settings import EXAMPLE_POLICY

POLICY = load_policy(EXAMPLE_POLICY)
STRICTNESS = {Outcome.ALLOW: 0, Outcome.APPROVE: 1, Outcome.DENY: 2}
SUPPORT = POLICY.agents["support"].capabilities


def refund(amount: str = "20", order: str = "ORD-1001", **scope: object) -> CallContext:
    return CallContext.model_validate(
        dict(
            workspace="acme",
            agent="support",
            requested_by="u_alice",
            mode=Mode.AUTO,
            tool="payments.create_refund",
            effect=Effect.WRITE,
            tier=Tier.HIGH,
            args={"order_id": order, "amount_usd": amount},
            facts={"refundable_usd": "180.00"},
            **scope,
        )
    )


def only_order(order: str, effect: str = "deny") -> RunRule:
    return RunRule(
        id="this-order-only",
        tool="payments.create_refund",
        effect=effect,  # type: ignore[arg-type]
        when=Condition(arg="order_id", not_in=[order]),
        reason=f"this task refunds {order} only",
    )


def test_a_tool_outside_the_runs_capabilities_is_denied_by_its_own_rule() -> None:
    decision = decide(POLICY, refund(run_capabilities=frozenset({"orders.get_order"})))
    assert (decision.outcome, decision.rule) == (Outcome.DENY, "run.capabilities")
    assert decision.reason == "this run may call only orders.get_order"


def test_a_run_rule_denies_what_the_policy_would_allow_and_is_named_as_the_runs() -> None:
    assert decide(POLICY, refund()).outcome is Outcome.ALLOW
    decision = decide(POLICY, refund(order="ORD-1002", run_rules=(only_order("ORD-1001"),)))
    assert (decision.outcome, decision.rule, decision.reason) == (
        Outcome.DENY,
        "run.this-order-only",
        "this task refunds ORD-1001 only",
    )
    assert decide(POLICY, refund(run_rules=(only_order("ORD-1001"),))).outcome is Outcome.ALLOW


def test_a_run_rule_may_demand_approval_but_never_lift_it() -> None:
    decision = decide(POLICY, refund(order="ORD-1002", run_rules=(only_order("ORD-1001", "require_approval"),)))
    assert (decision.outcome, decision.rule) == (Outcome.APPROVE, "run.this-order-only")
    with pytest.raises(ValidationError, match="effect"):
        only_order("ORD-1001", "auto")


def test_a_run_cannot_name_a_capability_its_agent_lacks() -> None:
    assert may_start(POLICY, "acme", "support", "u_alice", ["orders.get_order"]) is None
    assert may_start(POLICY, "acme", "support", "u_alice", ["payments.void_refund"]) == (
        "capabilities: 'payments.void_refund' not among agent 'support''s capabilities"
    )


def test_run_input_takes_a_scope_and_refuses_a_lifting_rule_naming_the_field() -> None:
    base = {"goal": "g", "workspace": "acme", "requested_by": "u_alice"}
    scoped = RunInput.model_validate({**base, "capabilities": ["orders.get_order"]})
    assert scoped.capabilities == ["orders.get_order"]
    lifting = {"id": "x", "tool": "payments.create_refund", "effect": "auto", "when": {"always": True}}
    with pytest.raises(ValidationError, match=r"rules\.0\.effect"):
        RunInput.model_validate({**base, "rules": [lifting]})


@given(
    caps=st.none() | st.frozensets(st.sampled_from(SUPPORT)),
    orders=st.lists(st.sampled_from(["ORD-1001", "ORD-1002", "ORD-9"]), max_size=3),
    effect=st.sampled_from(["deny", "require_approval"]),
    amount=st.decimals(min_value=Decimal("0"), max_value=Decimal("300"), places=2),
    order=st.sampled_from(["ORD-1001", "ORD-1002"]),
    mode=st.sampled_from(list(Mode)),
)
def test_a_runs_scope_never_makes_a_decision_looser(
    caps: frozenset[str] | None, orders: list[str], effect: str, amount: Decimal, order: str, mode: Mode
) -> None:
    """Whatever a run's input says, its decision is at least as strict as without its scope."""
    rules = tuple(
        RunRule(id=f"r{i}", tool="payments.create_refund", effect=effect, when=Condition(arg="order_id", not_in=[o]))  # type: ignore[arg-type]
        for i, o in enumerate(orders)
    )
    plain = refund(str(amount), order).model_copy(update={"mode": mode})
    scoped = plain.model_copy(update={"run_capabilities": caps, "run_rules": rules})
    assert STRICTNESS[decide(POLICY, scoped).outcome] >= STRICTNESS[decide(POLICY, plain).outcome]
