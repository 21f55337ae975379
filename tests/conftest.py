"""Fixtures: a real Temporal dev server for the session, a fresh worker and database per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import Engine
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from airlock.binaries import binary
from airlock.models import RunReport, Status
from airlock.settings import Settings
from tools.backoffice.db import connect
from worker import build_worker
from workflows.agent_run import SEARCH_ATTRIBUTES



@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
    )
    try:
        yield environment
    finally:
        await environment.shutdown()


CONTROL_QUEUE = "airlock-control-test"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def control_worker(env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Worker]:
    """One worker for the workspace control workflows, which outlive any single test."""
    settings = Settings(db=str(tmp_path_factory.mktemp("control") / "bo.db"), task_queue=CONTROL_QUEUE)
    async with build_worker(env.client, settings) as worker:
        yield worker


@pytest.fixture
def client(env: WorkflowEnvironment, control_worker: Worker) -> Client:
    return env.client


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        db=str(tmp_path / "backoffice.db"),
        task_queue=f"airlock-test-{uuid.uuid4().hex[:8]}",
        control_task_queue=CONTROL_QUEUE,
    )


@pytest.fixture
def db(settings: Settings) -> Engine:
    return connect(settings.db)


@pytest_asyncio.fixture(loop_scope="session")
async def worker(client: Client, settings: Settings) -> AsyncIterator[Worker]:
    w = build_worker(client, settings)
    async with w:
        yield w


class Runs:
    """Starts runs on the test's task queue and reads them back through queries."""

    def __init__(self, client: Client, settings: Settings) -> None:
        self.client = client
        self.settings = settings

    async def start(self, **overrides: Any) -> WorkflowHandle[Any, RunReport]:
        return await self.start_raw(run_input(**overrides))

    async def start_raw(self, raw: Any, workflow_id: str | None = None) -> WorkflowHandle[Any, RunReport]:
        return await self.client.start_workflow(
            "AgentRun",
            raw,
            id=workflow_id or f"run-{uuid.uuid4().hex[:10]}",
            task_queue=self.settings.task_queue,
            result_type=RunReport,
        )

    async def status(self, handle: WorkflowHandle[Any, Any]) -> Status:
        return await handle.query("status", result_type=Status)

    async def wait_for(self, handle: WorkflowHandle[Any, Any], predicate: Callable[[Status], bool], timeout: float = 20.0) -> Status:
        import asyncio

        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                status = await self.status(handle)
                if predicate(status):
                    return status
            except Exception:  # the run may not have started its first task yet
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"condition not reached; last status: {await self.status(handle)}")
            await asyncio.sleep(0.05)

    async def pending(self, handle: WorkflowHandle[Any, Any]) -> Status:
        return await self.wait_for(handle, lambda s: bool(s.pending_approvals))


@pytest.fixture
def runs(client: Client, settings: Settings, worker: Worker) -> Runs:
    return Runs(client, settings)


def run_input(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "goal": "Refund order ORD-1001, it arrived damaged",
        "workspace": "acme",
        "requested_by": "u_alice",
        "agent": "support",
        "mode": "auto",
        "model": {"provider": "scripted", "script": []},
    }
    script = overrides.pop("script", None)
    if script is not None:
        base["model"] = {"provider": "scripted", "script": script}
    base.update(overrides)
    return base


def call(tool: str, **args: Any) -> dict[str, Any]:
    return {"tool": tool, "args": args}


def count_rows(db: Engine, table: Any) -> int:
    from sqlalchemy import func, select

    with db.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()
