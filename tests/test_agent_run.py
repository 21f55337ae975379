"""AgentRun end to end against a real Temporal dev server and a real back-office database."""

from __future__ import annotations

from sqlalchemy import Engine, func, select

from airlock.models import CallStatus, RunState
from tools.backoffice.db import refunds
from tests.conftest import Runs, call


async def test_allowed_read_then_small_refund_completes(runs: Runs, db: Engine) -> None:
    """In auto mode a read and a refund under the approval threshold run without anyone's say."""
    handle = await runs.start(
        script=[
            call("orders.get_order", order_id="ORD-1001"),
            call("payments.create_refund", order_id="ORD-1001", amount_usd=20, reason="damaged"),
        ]
    )
    report = await handle.result()
    assert report.state is RunState.COMPLETED
    assert [c.status for c in report.calls] == [CallStatus.EXECUTED, CallStatus.EXECUTED]
    assert report.calls[0].result["refundable_usd"] == "180.00"
    assert report.calls[1].decision.rule == "agent.capabilities"
    with db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(refunds)).scalar_one() == 1
