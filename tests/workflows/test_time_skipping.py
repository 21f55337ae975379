"""Approval timeouts on Temporal's time-skipping test server: a day passes in milliseconds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import Engine
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from contracts.models import CallStatus, DecideResult, RunReport, RunState, Status, TimelineEntry
from contracts.workspace_io import ReserveResult, SpendView, control_workflow_id
from policy import load_policy
from runtime.binaries import binary
from runtime.converter import data_converter
from runtime.settings import Settings
from tests.conftest import REFUND_120, Runs, count_rows, policy_file, reserve_request, start_control
from tools.backoffice.db import refunds
from worker import build_worker, register_search_attributes


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binary("temporal-test-server"),
        data_converter=data_converter,
    )
    await register_search_attributes(env.client)
    try:
        yield env
    finally:
        await env.shutdown()


@asynccontextmanager
async def skipping_worker(env: WorkflowEnvironment, settings: Settings, **update: Any) -> AsyncIterator[Runs]:
    """A worker on the time-skipping server, and runs started on its queue."""
    # This server is not the session's: its workspace control runs on this worker's own queue.
    settings = settings.model_copy(update={"control_task_queue": None, **update})
    async with build_worker(env.client, settings):
        try:
            yield Runs(env.client, settings)
        finally:
            await end_control_workflows(env, settings)


async def end_control_workflows(env: WorkflowEnvironment, settings: Settings) -> None:
    """Ends the control workflows the test's runs started on this worker's queue. Left running, the
    next test's runs would signal one whose queue no worker polls any more: the server keeps its
    clock still while a workflow task waits, so every timer of the next test would wait forever."""
    for workspace in load_policy(settings.policy_path).workspaces:
        handle = env.client.get_workflow_handle(control_workflow_id(workspace))
        try:
            if (await handle.describe()).status is WorkflowExecutionStatus.RUNNING:
                await handle.terminate("the test is done")
        except RPCError as e:
            if e.status is not RPCStatusCode.NOT_FOUND:
                raise


async def start_refund(runs: Runs) -> WorkflowHandle[Any, RunReport]:
    """A refund waiting for approval, in a run whose wall-clock budget outlasts any approval timeout."""
    return await runs.start(mode="approve", budget={"max_wall_clock_s": 200_000}, script=[REFUND_120])


async def test_unanswered_approval_is_a_deny(skipping_env: WorkflowEnvironment, settings: Settings, db: Engine) -> None:
    """No answer within the tier's timeout (a day, in the shipped policy) denies the call."""
    async with skipping_worker(skipping_env, settings) as runs:
        report = await (await start_refund(runs)).result()
    assert report.state is RunState.COMPLETED
    assert report.calls[0].status is CallStatus.REJECTED
    assert report.calls[0].error == "no approval within 86400s: the call counts as denied"
    assert (report.finished_at - report.started_at).total_seconds() >= 86_400
    assert count_rows(db, refunds) == 0


@pytest.fixture
def escalating_policy(tmp_path: Path) -> Path:
    """High-tier calls escalate to admins after an hour and count as denied after two."""
    return policy_file(
        tmp_path / "escalating.yaml",
        tiers={"high": {"timeout_s": 7200, "escalate_after_s": 3600, "escalate_to": "admin"}},
        people={"u_erin": {"roles": ["admin"]}},
    )


async def test_a_pending_approval_escalates_then_a_higher_role_decides(
    skipping_env: WorkflowEnvironment, settings: Settings, escalating_policy: Path, db: Engine
) -> None:
    """Before the escalation time only approvers may decide; after it an admin may too."""
    async with skipping_worker(skipping_env, settings, policy_path=escalating_policy) as runs:
        handle = await start_refund(runs)
        status = await runs.pending(handle)
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
    async with skipping_worker(skipping_env, settings, policy_path=escalating_policy) as runs:
        report = await (await start_refund(runs)).result()
    assert report.calls[0].status is CallStatus.REJECTED
    assert report.calls[0].error == "no approval within 7200s: the call counts as denied"
    assert 7_200 <= (report.finished_at - report.started_at).total_seconds() < 86_400
    assert count_rows(db, refunds) == 0


async def test_a_model_call_running_across_midnight_is_charged_to_the_day_it_reserved_on(
    skipping_env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    """Yesterday's open reservation no longer holds today's money, but its settlement still
    lands on yesterday's ledger."""
    # A workspace of this test's own: the runs of the other tests on this server started a
    # control workflow for `acme`, and that one never ends.
    workspace = "ledger"
    policy = policy_file(tmp_path / "ledger.yaml", workspaces={workspace: {"max_autonomy": "auto"}})
    async with skipping_worker(skipping_env, settings, policy_path=policy) as runs:
        control = await start_control(skipping_env.client, workspace, runs.settings.task_queue)
        assert (
            await control.execute_update("reserve", reserve_request(workspace, 1, 0.4), result_type=ReserveResult)
        ).granted
        await skipping_env.sleep(86_400)
        assert (
            await control.execute_update("reserve", reserve_request(workspace, 2, 0.5), result_type=ReserveResult)
        ).granted
        assert (
            await control.execute_update("reserve", reserve_request(workspace, 3, 0.5), result_type=ReserveResult)
        ).granted
        await control.signal("settle", {"reservation_id": "r-1", "usd": 0.3})
        spend = await control.query("spend", result_type=SpendView)
        await control.terminate("test done")
    today, yesterday = spend.days[0], spend.days[1]
    assert today.spent_usd == 0 and spend.reserved_usd == 1.0
    assert yesterday.spent_usd == 0.3 and yesterday.by_run == {"run-1": 0.3}
