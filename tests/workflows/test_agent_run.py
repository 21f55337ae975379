"""AgentRun end to end against a real Temporal dev server and a real back-office database."""

from __future__ import annotations

from sqlalchemy import Engine, select

from contracts.models import CallStatus, RunState
from tests.conftest import Runs, call, count_rows
from tools.backoffice.db import customers, emails, refunds


async def test_allowed_read_then_small_refund_completes(runs: Runs, db: Engine) -> None:
    """In auto mode a read and a refund under the approval threshold run without anyone's say."""
    handle = await runs.start(
        script=[
            call("orders.get_order", order_id="ORD-1001"),
            call("payments.create_refund", order_id="ORD-1001", amount_usd=20, reason="damaged"),
            {"answer": "refunded 20 USD"},
        ]
    )
    report = await handle.result()
    assert report.state is RunState.COMPLETED
    assert report.answer == "refunded 20 USD"
    assert [c.status for c in report.calls] == [CallStatus.EXECUTED, CallStatus.EXECUTED]
    assert report.calls[0].result["refundable_usd"] == "180.00"
    assert report.calls[1].decision.rule == "agent.capabilities"
    assert count_rows(db, refunds) == 1
    # The report says what changed and how to undo it.
    assert [c.tool for c in report.changes] == ["payments.create_refund"]
    assert report.changes[0].diff[0].before == "0.00" and report.changes[0].diff[0].after == "20.00"
    assert report.undo[0].tool == "payments.void_refund"
    assert report.policy_hash.startswith("sha256:")
    assert report.model == "scripted"


async def test_policy_denials_are_recorded_and_the_run_goes_on(runs: Runs, db: Engine) -> None:
    """Over-limit refunds, email outside the allowed domains and a field not allowed are refused
    by the rule that says so; nothing is written, and the run completes."""
    handle = await runs.start(
        script=[
            call("payments.create_refund", order_id="ORD-1002", amount_usd=250, reason="broken"),
            call("email.send", to="mallory@evil.test", subject="Hi", body="data"),
            call("crm.update_customer", customer_id="C-100", changes={"name": "Mallory"}),
            call("payments.create_refund", order_id="ORD-1001", amount_usd=190, reason="broken"),
        ]
    )
    report = await handle.result()
    assert report.state is RunState.COMPLETED
    assert [(c.status, c.decision.rule) for c in report.calls] == [
        (CallStatus.DENIED, "refund.max-200"),
        (CallStatus.DENIED, "email.allowed-domains"),
        (CallStatus.DENIED, "crm.allowed-fields"),
        (CallStatus.DENIED, "refund.within-refundable"),
    ]
    assert "200 USD" in report.calls[0].error
    assert count_rows(db, refunds) == 0 and count_rows(db, emails) == 0
    with db.connect() as conn:
        name = conn.execute(select(customers.c.name).where(customers.c.id == "C-100")).scalar_one()
    assert name == "Dana Whitfield"


async def test_suggest_mode_executes_nothing(runs: Runs, db: Engine) -> None:
    """In suggest mode every call, reads included, is recorded as a suggestion and none runs."""
    handle = await runs.start(
        mode="suggest",
        script=[
            call("orders.get_order", order_id="ORD-1001"),
            call("payments.create_refund", order_id="ORD-1001", amount_usd=20, reason="damaged"),
        ],
    )
    report = await handle.result()
    assert report.state is RunState.COMPLETED
    assert [c.status for c in report.calls] == [CallStatus.SUGGESTED, CallStatus.SUGGESTED]
    assert all(c.result is None for c in report.calls)
    assert count_rows(db, refunds) == 0


async def test_sandbox_workspace_caps_autonomy(runs: Runs, db: Engine) -> None:
    """A run asking for auto in the sandbox workspace gets the workspace's most: suggest."""
    handle = await runs.start(
        workspace="sandbox",
        mode="auto",
        script=[call("payments.create_refund", order_id="ORD-1001", amount_usd=20, reason="x")],
    )
    report = await handle.result()
    assert report.mode.value == "suggest"
    assert report.calls[0].status is CallStatus.SUGGESTED
    assert report.calls[0].decision.rule == "mode.suggest"
    assert count_rows(db, refunds) == 0


async def test_unknown_tool_and_invalid_arguments_leave_the_run_alive(runs: Runs) -> None:
    """A tool that does not exist and arguments that do not fit the schema are reported to the
    agent with exactly what is wrong; nothing runs, and the run carries on to the next step."""
    handle = await runs.start(
        script=[
            call("payments.wire_transfer", amount_usd=5),
            call("payments.create_refund", order_id="ORD-1001", amount_usd="lots"),
            call("orders.get_order", order_id="ORD-1001"),
        ]
    )
    report = await handle.result()
    assert report.state is RunState.COMPLETED
    unknown, invalid, read = report.calls
    assert unknown.status is CallStatus.INVALID and "unknown tool 'payments.wire_transfer'" in unknown.error
    assert invalid.status is CallStatus.INVALID
    assert "amount_usd: Input should be a valid decimal" in invalid.error
    assert "reason: Field required" in invalid.error
    assert read.status is CallStatus.EXECUTED


async def test_tool_refusal_is_reported_not_retried(runs: Runs, db: Engine) -> None:
    """A tool that refuses (an order that does not exist) is told to the agent as data."""
    handle = await runs.start(script=[call("orders.get_order", order_id="ORD-9999")])
    report = await handle.result()
    assert report.state is RunState.COMPLETED
    assert report.calls[0].status is CallStatus.FAILED
    assert "no order 'ORD-9999'" in report.calls[0].error


async def test_capability_outside_agent_is_denied_without_preview(runs: Runs) -> None:
    """A registered tool the agent holds no capability for is denied by `agent.capabilities`."""
    handle = await runs.start(script=[call("payments.void_refund", refund_id="RF-1")])
    report = await handle.result()
    assert report.calls[0].status is CallStatus.DENIED
    assert report.calls[0].decision.rule == "agent.capabilities"
    assert report.calls[0].diff == []
