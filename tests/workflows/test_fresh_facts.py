"""A call approved after a wait is previewed again just before it runs: an approval given for
facts that no longer hold does not carry over."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import Engine
from temporalio.client import Client, WorkflowHandle

from contracts.models import CallStatus, RunState
from recorder.flight_recorder import fetch_history, reconstruct
from tests.conftest import READ, REFUND_120, Runs, call, count_rows, switch
from tools.backoffice.db import refunds


def refund(amount: int) -> dict[str, Any]:
    return call("payments.create_refund", order_id="ORD-1001", amount_usd=amount, reason="goodwill")


async def test_an_approval_for_old_facts_does_not_carry_over(runs: Runs, db: Engine) -> None:
    """A 120 USD refund waits for approval while 180 USD is refundable; another run refunds 2 x 20
    meanwhile. Approved, the call is decided again on the 140 USD left: it still needs approval,
    and waits for a new one (the vote was for the old facts); approved again, it runs once."""
    waiting = await runs.start(mode="approve", script=[REFUND_120])
    first = (await runs.pending(waiting)).pending_approvals[0]
    other = await runs.start(mode="auto", script=[refund(20), refund(20)])
    assert [c.status for c in (await other.result()).calls] == [CallStatus.EXECUTED] * 2

    await waiting.signal("approve", {"approval_id": first.approval_id, "approver": "u_bob", "comment": "ok"})
    status = await runs.wait_for(
        waiting, lambda s: bool(s.pending_approvals) and s.pending_approvals[0].approval_id != first.approval_id
    )
    second = status.pending_approvals[0]
    assert second.approval_id == f"{first.approval_id}-r2"
    assert [str(d) for d in second.diff] == ["orders[ORD-1001].refunded_usd: 40.00 -> 160.00"]
    timeline = await waiting.query("timeline", result_type=list[dict[str, Any]])
    again = [e for e in timeline if e["kind"] == "decision"][-1]
    assert again["outcome"] == "needs_approval" and again["rule"] == "refund.over-50-approval"
    assert again["message"] == (
        "decided again before running: the facts changed since the approval "
        "(refundable_usd: 180.00 → 140.00); the approval given does not carry over"
    )

    await waiting.signal("approve", {"approval_id": second.approval_id, "approver": "u_carol"})
    report = await waiting.result()
    assert report.state is RunState.COMPLETED
    assert report.calls[0].status is CallStatus.EXECUTED
    assert [v.approver for v in report.calls[0].votes] == ["u_carol"]
    assert count_rows(db, refunds) == 3


async def test_an_approved_call_the_fresh_facts_forbid_is_denied(runs: Runs, db: Engine) -> None:
    """Approved while 180 USD was refundable; by the time it runs, other refunds left 80: the
    policy's refundable rule denies it, recorded, and nothing is refunded by this run."""
    waiting = await runs.start(mode="approve", script=[REFUND_120])
    first = (await runs.pending(waiting)).pending_approvals[0]
    other = await runs.start(mode="auto", script=[refund(50), refund(50)])
    assert [c.status for c in (await other.result()).calls] == [CallStatus.EXECUTED] * 2
    before = count_rows(db, refunds)

    await waiting.signal("approve", {"approval_id": first.approval_id, "approver": "u_bob"})
    report = await waiting.result()
    [refused] = report.calls
    assert refused.status is CallStatus.DENIED
    assert refused.decision is not None and refused.decision.rule == "refund.within-refundable"
    assert refused.facts["refundable_usd"] == "80.00"
    assert count_rows(db, refunds) == before


async def _obeyed_a_switch(handle: WorkflowHandle[Any, Any]) -> None:
    """Until the run has taken the control workflow's message that a switch changed."""
    for _ in range(200):
        timeline = await handle.query("timeline", result_type=list[dict[str, Any]])
        if any(e["kind"] == "workspace_switch" for e in timeline):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the run never heard of the switch")


@pytest.mark.parametrize("attempt", range(5))
async def test_an_approval_that_lands_while_a_switch_is_confirmed_replays_at_every_moment(
    runs: Runs, client: Client, clean_switches: Any, attempt: int
) -> None:
    """Safe mode goes on while a refund waits, then the refund is approved: the run reads the
    control store before it goes on, and the store's answer can reach the run one workflow task
    after the one it is recorded in. The history, fetched while the approved write is held,
    still replays (what `airlock show` does) whichever task the answer reached it in; five runs
    give the race its chances."""
    handle = await runs.start(script=[READ, REFUND_120], mode="approve")
    approval_id = (await runs.pending(handle)).pending_approvals[0].approval_id
    await switch(client, "safe_mode", True)
    await _obeyed_a_switch(handle)
    await handle.signal("approve", {"approval_id": approval_id, "approver": "u_bob", "comment": "ok"})
    await runs.wait_for(handle, lambda s: s.held is not None and s.held.kind == "safe_mode")
    recording = await reconstruct(await fetch_history(client, handle.id))
    assert recording.state is RunState.RUNNING
    await switch(client, "safe_mode", False)
    assert (await handle.result()).state is RunState.COMPLETED
