"""Approval timeouts on Temporal's time-skipping test server: a day passes in milliseconds."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import pytest_asyncio
from sqlalchemy import Engine
from temporalio.client import WorkflowHandle, WorkflowQueryFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from airlock.models import CallStatus, DecideResult, RunReport, RunState, Status, TimelineEntry
from airlock.settings import EXAMPLE_POLICY, Settings
from tests.conftest import binary, call, count_rows, run_input
from tools.backoffice.db import refunds
from worker import build_worker, register_search_attributes


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    await register_search_attributes(env.client)
    try:
        yield env
    finally:
        await env.shutdown()


async def test_unanswered_approval_is_a_deny(skipping_env: WorkflowEnvironment, settings: Settings, db: Engine) -> None:
    """No answer within the tier's timeout (a day, in the shipped policy) denies the call."""
    refund = call("payments.create_refund", order_id="ORD-1001", amount_usd=120, reason="damaged")
    # This server is not the session's: its workspace control runs on this worker's own queue.
    settings = settings.model_copy(update={"control_task_queue": None})
    async with build_worker(skipping_env.client, settings):
        report = await skipping_env.client.execute_workflow(
            "AgentRun",
            run_input(mode="approve", budget={"max_wall_clock_s": 200_000}, script=[refund]),
            id=f"timeout-{uuid.uuid4().hex[:8]}",
            task_queue=settings.task_queue,
            result_type=RunReport,
        )
    assert report.state is RunState.COMPLETED
    assert report.calls[0].status is CallStatus.REJECTED
    assert report.calls[0].error == "no approval within 86400s: the call counts as denied"
    assert (report.finished_at - report.started_at).total_seconds() >= 86_400
    assert count_rows(db, refunds) == 0


@pytest.fixture
def escalating_policy(tmp_path: Path) -> Path:
    """High-tier calls escalate to admins after an hour and count as denied after two."""
    policy = yaml.safe_load(EXAMPLE_POLICY.read_text())
    policy["tiers"]["high"] |= {"timeout_s": 7200, "escalate_after_s": 3600, "escalate_to": "admin"}
    policy["people"]["u_erin"] = {"roles": ["admin"]}
    path = tmp_path / "escalating.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


async def test_a_pending_approval_escalates_then_a_higher_role_decides(
    skipping_env: WorkflowEnvironment, settings: Settings, escalating_policy: Path, db: Engine
) -> None:
    """Before the escalation time only approvers may decide; after it an admin may too."""
    refund = call("payments.create_refund", order_id="ORD-1001", amount_usd=120, reason="damaged")
    settings = settings.model_copy(update={"control_task_queue": None, "policy_path": escalating_policy})
    client = skipping_env.client
    async with build_worker(client, settings):
        handle = await client.start_workflow(
            "AgentRun",
            run_input(mode="approve", budget={"max_wall_clock_s": 200_000}, script=[refund]),
            id=f"escalate-{uuid.uuid4().hex[:8]}",
            task_queue=settings.task_queue,
            result_type=RunReport,
        )
        status = await wait_for_pending(handle)
        pending = status.pending_approvals[0]
        assert pending.escalates_at is not None and pending.escalated_to is None
        vote = {"approval_id": pending.approval_id, "approver": "u_erin", "decision": "approve"}
        early = await handle.execute_update("decide", vote, result_type=DecideResult)
        assert not early.accepted and "lacks the role" in (early.reason or "")

        await skipping_env.sleep(3_700)
        escalated = (await handle.query("status", result_type=Status)).pending_approvals[0]
        assert escalated.escalated_to == "admin" and escalated.approver_roles == ["approver", "admin"]
        assert (await handle.execute_update("decide", vote, result_type=DecideResult)).accepted
        report = await handle.result()
        timeline = await handle.query("timeline", result_type=list[TimelineEntry])
    assert report.calls[0].status is CallStatus.EXECUTED
    assert [v.approver for v in report.calls[0].votes] == ["u_erin"]
    assert count_rows(db, refunds) == 1
    kinds = [e.kind for e in timeline]
    assert kinds.index("approval_escalated") < kinds.index("approval_vote")


async def test_an_escalated_approval_nobody_answers_is_denied_at_its_timeout(
    skipping_env: WorkflowEnvironment, settings: Settings, escalating_policy: Path, db: Engine
) -> None:
    refund = call("payments.create_refund", order_id="ORD-1001", amount_usd=120, reason="damaged")
    settings = settings.model_copy(update={"control_task_queue": None, "policy_path": escalating_policy})
    async with build_worker(skipping_env.client, settings):
        report = await skipping_env.client.execute_workflow(
            "AgentRun",
            run_input(mode="approve", budget={"max_wall_clock_s": 200_000}, script=[refund]),
            id=f"expire-{uuid.uuid4().hex[:8]}",
            task_queue=settings.task_queue,
            result_type=RunReport,
        )
    assert report.calls[0].status is CallStatus.REJECTED
    assert report.calls[0].error == "no approval within 7200s: the call counts as denied"
    assert 7_200 <= (report.finished_at - report.started_at).total_seconds() < 86_400
    assert count_rows(db, refunds) == 0


async def wait_for_pending(handle: WorkflowHandle[Any, RunReport]) -> Status:
    for _ in range(200):
        try:
            status = await handle.query("status", result_type=Status)
            if status.pending_approvals:
                return status
        except WorkflowQueryFailedError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("the run never asked for approval")
