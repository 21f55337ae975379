"""Fixtures: a real Temporal dev server for the session, a fresh worker and database per test."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import pytest_asyncio
import yaml
from sqlalchemy import Engine, func, select
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.openai_provider import OpenAIProvider, PriceTable
from airlock import cli
from chaos.postgres import ThrowawayPostgres
from contracts.models import RunReport, Status
from contracts.workspace_io import ReserveRequest, SwitchResult, WorkspaceView, control_workflow_id
from runtime.settings import DEFAULT_PRICES, EXAMPLE_POLICY, Settings
from tools.backoffice.db import connect
from tools.registry import load_registry
from worker import build_worker, start_local_server

RECORDINGS = Path(__file__).parent / "recordings" / "openai"
PRODUCTION_POLICY = EXAMPLE_POLICY.parent / "production-example.yaml"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    environment = await start_local_server()
    try:
        yield environment
    finally:
        await environment.shutdown()


CONTROL_QUEUE = "airlock-control-test"


@pytest.fixture(scope="session")
def control_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The control store every worker of the session shares, as the workers of a namespace do."""
    return str(tmp_path_factory.mktemp("control-store") / "control.db")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def control_worker(
    env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory, control_db: str
) -> AsyncIterator[Worker]:
    """One worker for the workspace control workflows, which outlive any single test."""
    settings = Settings(
        db=str(tmp_path_factory.mktemp("control") / "bo.db"), task_queue=CONTROL_QUEUE, control_db=control_db
    )
    async with build_worker(env.client, settings) as worker:
        yield worker


@pytest.fixture
def client(env: WorkflowEnvironment, control_worker: Worker) -> Client:
    return env.client


@pytest.fixture(scope="session")
def postgres() -> Iterator[ThrowawayPostgres]:
    """A PostgreSQL cluster of the session's own, on loopback (Debian's `postgresql` package; `.ci/run`
    installs it). Started only when a test runs on PostgreSQL; a missing install is an error."""
    with ThrowawayPostgres() as cluster:
        yield cluster


@pytest.fixture
def database(tmp_path: Path) -> str:
    """A test's back-office database (`AIRLOCK_DB`): SQLite, except in the modules that run on both
    databases (`tests.databases`)."""
    return str(tmp_path / "backoffice.db")


@pytest.fixture
def settings(tmp_path: Path, database: str, control_db: str) -> Settings:
    return Settings(
        db=database,
        control_db=control_db,
        task_queue=f"airlock-test-{uuid.uuid4().hex[:8]}",
        control_task_queue=CONTROL_QUEUE,
        secrets_key_file=tmp_path / "secrets.key",
    )


@pytest.fixture
def fault_settings(settings: Settings, tmp_path: Path) -> Settings:
    """Settings whose policy also lets the `support` agent call the misbehaving example tools
    (`tests.example_tools.faults`)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        EXAMPLE_POLICY.read_text().replace(
            "      - kb.search\n", "      - kb.search\n      - faults.broken\n      - faults.slow\n", 1
        )
    )
    return settings.model_copy(
        update={"policy_path": policy, "tool_modules": "tools.backoffice,tests.example_tools.faults"}
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

    async def wait_for(
        self, handle: WorkflowHandle[Any, Any], predicate: Callable[[Status], bool], timeout: float = 20.0
    ) -> Status:
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


# The calls most tests script: a read, and a refund the shipped policy sends for approval.
READ = call("orders.get_order", order_id="ORD-1001")
REFUND_120 = call("payments.create_refund", order_id="ORD-1001", amount_usd=120, reason="damaged")


def count_rows(db: Engine, table: Any, *where: Any) -> int:
    with db.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def policy_file(path: Path, **changes: Any) -> Path:
    """The shipped policy with `changes` merged into it (mappings key by key, anything else
    replaced), written to `path`."""
    policy = yaml.safe_load(EXAMPLE_POLICY.read_text())
    _merge(policy, changes)
    path.write_text(yaml.safe_dump(policy))
    return path


def _merge(into: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


@pytest.fixture
def critical_policy(tmp_path: Path) -> Path:
    """The shipped policy with CRM updates in the critical tier: two approvers, one an admin."""
    return policy_file(tmp_path / "critical.yaml", tools={"crm.update_customer": {"tier": "critical"}})


class AirlockCli:
    """`airlock ...` as a person would type it, its exit status and what it printed."""

    async def __call__(self, *argv: str) -> tuple[int, str]:
        out = io.StringIO()
        # Each command runs an event loop of its own, which cannot nest in the test's.
        status = await asyncio.to_thread(cli.run, list(argv), out)
        return status, out.getvalue()


@pytest.fixture
def airlock_cli(env: WorkflowEnvironment, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AirlockCli:
    """The CLI pointed at the session's server and this test's task queues."""
    monkeypatch.setenv("TEMPORAL_ADDRESS", env.client.service_client.config.target_host)
    monkeypatch.setenv("AIRLOCK_TASK_QUEUE", settings.task_queue)
    monkeypatch.setenv("AIRLOCK_CONTROL_TASK_QUEUE", CONTROL_QUEUE)
    monkeypatch.setenv("AIRLOCK_CONTROL_DB", settings.control_db)
    return AirlockCli()


def fake_openai(settings: Settings, answer: Callable[[httpx2.Request], httpx2.Response]) -> OpenAIProvider:
    """The real `openai` provider, every HTTP request answered by `answer` instead of a server."""
    return OpenAIProvider(
        api_key="sk-test-airlock-0123456789abcdef",
        base_url="https://api.openai.test/v1",
        timeout_s=5,
        prices=PriceTable.load(DEFAULT_PRICES),
        registry=load_registry(settings.tool_module_list),
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(answer)),
    )


def recorded_openai_provider(settings: Settings) -> OpenAIProvider:
    """The real `openai` provider, every request answered with one recorded OpenAI response."""
    response = json.loads((RECORDINGS / "tool_call_proposal.json").read_text())["response"]

    def answer(request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/chat/completions"
        return httpx2.Response(response["status"], headers=response["headers"], json=response["json"])

    return fake_openai(settings, answer)


def reserve_request(workspace: str, n: int, usd: float, agent: str = "support") -> ReserveRequest:
    """Reservation `r-n` of run `run-n`, against a 1 USD daily cap."""
    return ReserveRequest(
        workspace=workspace,
        run_id=f"run-{n}",
        reservation_id=f"r-{n}",
        agent=agent,
        requested_by="u_alice",
        usd=usd,
        cap_usd=1.0,
    )


async def start_control(client: Client, workspace: str, task_queue: str) -> WorkflowHandle[Any, Any]:
    """The workspace's control workflow, started directly (no run joins it)."""
    return await client.start_workflow(
        "WorkspaceControl", workspace, id=control_workflow_id(workspace), task_queue=task_queue
    )


# ---- the workspace control plane ----------------------------------------------------------------


async def switch(client: Client, switch: str, on: bool, by: str = "u_carol") -> SwitchResult:
    """As `airlock workspace` sends it: starting the control workflow if there is none."""
    start = WithStartWorkflowOperation(
        "WorkspaceControl",
        "acme",
        id=control_workflow_id("acme"),
        task_queue=CONTROL_QUEUE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    result: SwitchResult = await client.execute_update_with_start_workflow(
        "switch",
        {"switch": switch, "on": on, "by": by, "reason": "incident 7"},
        start_workflow_operation=start,
        result_type=SwitchResult,
    )
    return result


async def ready_view(handle: Any) -> WorkspaceView:
    """The control workflow's state, once its first task has pinned its policy."""
    for _ in range(200):
        try:
            view: WorkspaceView = await handle.query("state", result_type=WorkspaceView)
            return view
        except Exception:
            await asyncio.sleep(0.05)
    raise AssertionError("the control workflow did not start")


@pytest.fixture
async def clean_switches(client: Client, runs: Runs) -> Any:
    """The control workflow outlives tests: start each from switches off, and leave them off."""
    warm = await runs.start(script=[])
    await warm.result()
    await switch(client, "kill_switch", False)
    await switch(client, "safe_mode", False)
    yield
    await switch(client, "kill_switch", False)
    await switch(client, "safe_mode", False)
