"""Approval timeouts on Temporal's time-skipping test server: a day passes in milliseconds."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
from sqlalchemy import Engine
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from airlock.models import CallStatus, RunReport, RunState
from airlock.settings import Settings
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
