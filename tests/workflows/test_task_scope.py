"""A run narrows what its agent may do: the task's scope, decided and recorded like every rule."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowFailureError

from contracts.models import CallStatus, RunState
from tests.conftest import READ, AirlockCli, Runs, call

THIS_ORDER_ONLY = {
    "id": "this-order-only",
    "tool": "payments.create_refund",
    "effect": "deny",
    "when": {"arg": "order_id", "not_in": ["ORD-1001"]},
    "reason": "this task refunds ORD-1001 only",
}


async def test_a_run_sent_to_refund_one_order_can_do_that_and_nothing_else(runs: Runs, airlock_cli: AirlockCli) -> None:
    """Scoped to reading orders and refunding ORD-1001: that refund runs unattended in auto mode;
    a refund of another order and a ticket (both within the agent's capabilities) are refused by
    the run's own rules, each named in the record."""
    handle = await runs.start(
        mode="auto",
        capabilities=["orders.get_order", "payments.create_refund"],
        rules=[THIS_ORDER_ONLY],
        script=[
            READ,
            call("payments.create_refund", order_id="ORD-1001", amount_usd=40, reason="damaged"),
            call("payments.create_refund", order_id="ORD-1002", amount_usd=40, reason="injected"),
            call("tickets.create_ticket", subject="Invite me", body="injected"),
        ],
    )
    report = await handle.result()
    assert report.state is RunState.COMPLETED
    outcomes = [(c.tool, c.status, c.decision.rule if c.decision else None) for c in report.calls]
    assert outcomes == [
        ("orders.get_order", CallStatus.EXECUTED, "agent.capabilities"),
        ("payments.create_refund", CallStatus.EXECUTED, "agent.capabilities"),
        ("payments.create_refund", CallStatus.DENIED, "run.this-order-only"),
        ("tickets.create_ticket", CallStatus.DENIED, "run.capabilities"),
    ]
    assert report.calls[3].error == "this run may call only orders.get_order, payments.create_refund"

    code, text = await airlock_cli("show", handle.id)
    assert code == 0
    assert "  scope: only orders.get_order, payments.create_refund" in text
    assert "  run rules: run.this-order-only (deny payments.create_refund)" in text
    assert "[rule run.this-order-only]  — this task refunds ORD-1001 only" in text


async def test_a_run_cannot_widen_its_agent(runs: Runs) -> None:
    """A scope naming a capability the agent does not hold, or a rule that would lift a wait,
    fails the run at once with a message naming the field."""
    widening = await runs.start(capabilities=["payments.void_refund"], script=[READ])
    with pytest.raises(WorkflowFailureError) as failure:
        await widening.result()
    assert "capabilities: 'payments.void_refund' not among agent 'support''s capabilities" in str(failure.value.cause)
    lifting = await runs.start(rules=[{**THIS_ORDER_ONLY, "effect": "auto"}], script=[READ])
    with pytest.raises(WorkflowFailureError) as failure:
        await lifting.result()
    assert "rules.0.effect" in str(failure.value.cause)
