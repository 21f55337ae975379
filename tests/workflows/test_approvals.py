"""Approvals: who may approve what, and what happens to every vote that does not count."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from temporalio.client import Client, WorkflowHandle

from contracts.models import CallStatus, DecideResult, RunReport, RunState
from runtime.settings import Settings
from tests.conftest import REFUND_120, AirlockCli, Runs, call, count_rows
from tools.backoffice.db import customers, refunds
from worker import build_worker


async def start_refund(runs: Runs) -> tuple[WorkflowHandle[Any, RunReport], str]:
    handle = await runs.start(mode="approve", script=[call("orders.get_order", order_id="ORD-1001"), REFUND_120])
    status = await runs.pending(handle)
    assert status.state.value == "awaiting_approval"
    return handle, status.pending_approvals[0].approval_id


async def test_approval_granted_executes_the_call(runs: Runs, db: Engine) -> None:
    """An approver's signal releases the pending refund; the report names who approved it."""
    handle, approval_id = await start_refund(runs)
    status = await runs.status(handle)
    pending = status.pending_approvals[0]
    assert pending.tool == "payments.create_refund" and pending.tier.value == "high"
    assert pending.approvals_still_needed == 1 and pending.approver_roles == ["approver"]
    assert [(d.field, d.before, d.after) for d in pending.diff] == [("orders[ORD-1001].refunded_usd", "0.00", "120.00")]
    assert count_rows(db, refunds) == 0
    await handle.signal("approve", {"approval_id": approval_id, "approver": "u_bob", "comment": "ok"})
    report = await handle.result()
    assert report.state is RunState.COMPLETED
    refund = report.calls[1]
    assert refund.status is CallStatus.EXECUTED
    assert [(v.approver, v.comment) for v in refund.votes] == [("u_bob", "ok")]
    assert refund.decision.rule == "refund.over-50-approval"
    assert count_rows(db, refunds) == 1


async def test_denied_approval_skips_the_call_and_tells_the_agent(runs: Runs, db: Engine) -> None:
    """A deny signal refuses the call; the run is not over, and nothing is written."""
    handle, approval_id = await start_refund(runs)
    await handle.signal("deny", {"approval_id": approval_id, "approver": "u_carol", "reason": "photos first"})
    report = await handle.result()
    assert report.state is RunState.COMPLETED
    refund = report.calls[1]
    assert refund.status is CallStatus.REJECTED
    assert refund.error == "denied by u_carol: photos first"
    assert count_rows(db, refunds) == 0


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"approver": "u_alice"}, "self-approval: u_alice requested this run"),
        ({"approver": "u_dave"}, "u_dave lacks the role this tier needs"),
        ({"approver": "u_zed"}, "'u_zed' is not a person in the policy"),
        ({"approver": "u_bob", "approval_id": "apr-9-9-nothing"}, "unknown approval id 'apr-9-9-nothing'"),
        (
            {"approver": "u_bob", "approval_id": 7, "comment": None},
            "malformed payload: approval_id: Input should be a valid string",
        ),
        ({"approver": "u_bob", "extra": 1}, "malformed payload: extra: Extra inputs are not permitted"),
    ],
)
async def test_votes_that_do_not_count_change_nothing_and_are_recorded(
    runs: Runs, db: Engine, payload: dict[str, Any], reason: str
) -> None:
    """Each refused vote leaves the call pending and is kept with its reason."""
    handle, approval_id = await start_refund(runs)
    await handle.signal("approve", {"approval_id": approval_id, **payload})
    await handle.signal("deny", "not even an object")
    status = await runs.wait_for(handle, lambda s: s.state.value == "awaiting_approval")
    assert status.pending_approvals[0].approvals_still_needed == 1
    await handle.signal("approve", {"approval_id": approval_id, "approver": "u_bob"})
    report = await handle.result()
    reasons = [r.reason for r in report.refused_votes]
    assert any(reason in r for r in reasons), reasons
    assert any("expected a JSON object" in r for r in reasons)
    assert [v.approver for v in report.calls[1].votes] == ["u_bob"]
    assert count_rows(db, refunds) == 1


async def test_a_decided_approval_cannot_be_decided_again(runs: Runs, db: Engine) -> None:
    """Once approved, a later vote on the same approval id is refused as already decided."""
    email = call("email.send", to="dana@example.com", subject="Refund", body="On its way.")
    handle = await runs.start(mode="approve", script=[REFUND_120, email])
    first = (await runs.pending(handle)).pending_approvals[0].approval_id
    vote = {"approval_id": first, "decision": "approve"}
    result = await handle.execute_update("decide", {**vote, "approver": "u_bob"}, result_type=DecideResult)
    assert result.accepted and result.approvals_still_needed == 0
    await runs.wait_for(handle, lambda s: bool(s.pending_approvals) and s.pending_approvals[0].approval_id != first)
    late = await handle.execute_update(
        "decide", {**vote, "approver": "u_carol", "decision": "deny"}, result_type=DecideResult
    )
    assert not late.accepted and late.reason == f"approval {first} is already decided"
    await handle.cancel()
    report = await handle.result()
    assert report.calls[0].status is CallStatus.EXECUTED
    assert count_rows(db, refunds) == 1


async def test_decide_update_answers_with_the_reason(runs: Runs) -> None:
    """The `decide` update tells the caller whether the vote counted, and why not."""
    handle, approval_id = await start_refund(runs)
    refused = await handle.execute_update(
        "decide", {"approval_id": approval_id, "approver": "u_alice", "decision": "approve"}, result_type=DecideResult
    )
    assert not refused.accepted and refused.reason == "self-approval: u_alice requested this run"
    malformed = await handle.execute_update(
        "decide", {"approval_id": approval_id, "decision": "maybe"}, result_type=DecideResult
    )
    assert not malformed.accepted and "decision" in malformed.reason and "approver: Field required" in malformed.reason
    accepted = await handle.execute_update(
        "decide", {"approval_id": approval_id, "approver": "u_bob", "decision": "approve"}, result_type=DecideResult
    )
    assert accepted.accepted and accepted.reason is None
    report = await handle.result()
    assert len(report.refused_votes) == 2
    assert report.calls[1].status is CallStatus.EXECUTED


async def test_critical_tier_needs_two_distinct_approvers_one_an_admin(
    client: Client, settings: Settings, critical_policy: Path, db: Engine
) -> None:
    """Two approvals from two people, one of them an admin; the same person twice is refused."""
    settings = settings.model_copy(update={"policy_path": critical_policy})
    async with build_worker(client, settings):
        runs = Runs(client, settings)
        handle = await runs.start(
            mode="auto", script=[call("crm.update_customer", customer_id="C-100", changes={"phone": "+1-555-0199"})]
        )
        status = await runs.pending(handle)
        pending = status.pending_approvals[0]
        assert pending.tier.value == "critical" and pending.approvals_still_needed == 2
        vote = {"approval_id": pending.approval_id, "decision": "approve"}
        first = await handle.execute_update("decide", {**vote, "approver": "u_bob"}, result_type=DecideResult)
        assert first.accepted and first.approvals_still_needed == 1
        again = await handle.execute_update("decide", {**vote, "approver": "u_bob"}, result_type=DecideResult)
        assert not again.accepted and again.reason == "u_bob has already voted on this approval"
        second = await handle.execute_update("decide", {**vote, "approver": "u_carol"}, result_type=DecideResult)
        assert second.accepted and second.approvals_still_needed == 0
        report = await handle.result()
    assert report.calls[0].status is CallStatus.EXECUTED
    assert [v.approver for v in report.calls[0].votes] == ["u_bob", "u_carol"]
    from sqlalchemy import select

    with db.connect() as conn:
        assert conn.execute(select(customers.c.phone).where(customers.c.id == "C-100")).scalar_one() == "+1-555-0199"


async def test_inbox_query_finds_runs_awaiting_approval(runs: Runs, client: Client) -> None:
    """One `workflow list` query over the search attributes is the approval inbox."""
    handle, _ = await start_refund(runs)
    query = f'AirlockState="awaiting_approval" AND AirlockWorkspace="acme" AND WorkflowId="{handle.id}"'
    for _ in range(100):
        found = [w async for w in client.list_workflows(query)]
        if found:
            break
        await asyncio.sleep(0.1)
    assert [w.id for w in found] == [handle.id]
    attrs = found[0].typed_search_attributes
    from workflows.search_attributes import PENDING

    assert attrs.get(PENDING) == 1
    await handle.cancel()


async def test_inbox_lists_what_a_person_may_approve_with_the_diff(runs: Runs, airlock_cli: AirlockCli) -> None:
    """u_bob sees the pending refund with its diff; u_alice (the requester) and u_dave (no role)
    see nothing to approve."""
    handle, approval_id = await start_refund(runs)
    outputs: dict[str, str] = {}
    for _ in range(100):  # the inbox reads visibility, which trails the run by a moment
        status, outputs["u_bob"] = await airlock_cli("inbox", "--as", "u_bob", "--workspace", "acme")
        assert status == 0
        if approval_id in outputs["u_bob"]:
            break
        await asyncio.sleep(0.1)
    for person in ("u_alice", "u_dave"):
        status, outputs[person] = await airlock_cli("inbox", "--as", person, "--workspace", "acme")
        assert status == 0
    assert approval_id in outputs["u_bob"] and "orders[ORD-1001].refunded_usd: 0.00 -> 120.00" in outputs["u_bob"]
    assert f"airlock approve {handle.id} {approval_id} --as u_bob\n" in outputs["u_bob"]
    assert approval_id not in outputs["u_alice"] and approval_id not in outputs["u_dave"]
    await handle.cancel()
