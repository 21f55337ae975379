"""Airlock's worker: wires the client, the AgentRun workflow and its activities together.

Configuration comes from the environment (see `runtime.settings`); a policy file with an error
stops the worker before it takes any task, with the line and the reason.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import signal
import sys
from datetime import timedelta

import structlog
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Interceptor, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.control_store import ControlStore, SpendLedger, SwitchGate
from activities.model_decide import ModelActivities, ModelProvider
from activities.openai_provider import OpenAIProvider
from activities.run_context import RunContextActivities, RunStartActivities
from activities.tool_calls import tool_activities
from activities.workspace import WorkspaceActivities
from policy import PolicyError, load_policy
from policy.check import require_sound_rules
from recorder.undo_plan import UndoActivities
from runtime.binaries import binary
from runtime.converter import data_converter
from runtime.logging import configure_logging
from runtime.sealing import Keyring
from runtime.settings import TOOL_THREADS, Settings
from runtime.tracing import configure_telemetry
from tools.backoffice.db import connect, create_schema
from tools.registry import ToolRegistry, load_registry
from tools.runner import ToolRunner
from tools.secret_guard import ToolSecrets
from workflows.agent_run import AgentRun
from workflows.current_details import CurrentDetails
from workflows.search_attributes import SEARCH_ATTRIBUTES
from workflows.undo_run import UndoRun
from workflows.workspace_control import WorkspaceControl

log = structlog.get_logger("airlock.worker")

# Workflow code imports only these of Airlock's own modules, and each is safe to share between
# runs, so the sandbox passes them through instead of re-importing them (and rebuilding their
# pydantic models) for every run. The modules that define workflows (`workflows.agent_run`,
# `workflows.undo_run`, `workflows.workspace_control`) are still imported afresh for each run.
# Temporal's default sandbox, which the replay tests use, imports all of them inside its
# restrictions, and `scripts/check_layers.py` checks that workflow code imports nothing else.
SANDBOX = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(
        # Pydantic models and pure functions over them; no I/O, no clock, no global state.
        "contracts",
        # The policy engine: pure functions of a pinned policy and a call.
        "policy",
        # Metric instruments through temporalio's replay-safe meter provider (API only, no I/O).
        "runtime.instruments",
        # Pure arithmetic over run state (budgets, votes, sizes, message decoding), and
        # `GovernedRun`, whose state lives in its instance, one per run.
        "workflows.approvals",
        "workflows.budget",
        "workflows.entry",
        "workflows.eras",
        "workflows.ending",
        "workflows.governed_run",
        "workflows.memory",
        "workflows.search_attributes",
        "workflows.sizes",
        "workflows.telemetry",
        # Signature verification (Ed25519), pure computation.
        "cryptography",
    )
)


async def connect_client(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.namespace,
        data_converter=data_converter,
        # Spans for workflows and activities, replay-safe; OTLP export when the environment asks.
        plugins=[configure_telemetry().plugin()],
    )


async def start_local_server(log_level: str = "error") -> WorkflowEnvironment:
    """A Temporal dev server in memory, from the binary installed with the project, with Airlock's
    data converter and search attributes: what the tests, the bench and the chaos suites run on."""
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary("temporal"),
        data_converter=data_converter,
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level=log_level,
    )


async def register_search_attributes(client: Client) -> None:
    """Registers Airlock's search attributes; ones already there are left as they are."""
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        existing = set(listed.custom_attributes)
    except RPCError as e:
        # Temporal's time-skipping test server cannot list them, only add them.
        if e.status is not RPCStatusCode.UNIMPLEMENTED:
            raise
        existing = set()
    missing = {
        # The SDK's enum has the API's values; the request is typed with the API's own enum.
        key.name: IndexedValueType.ValueType(key.indexed_value_type.value)
        for key in SEARCH_ATTRIBUTES
        if key.name not in existing
    }
    if not missing:
        return
    request = AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
    for attempt in range(5):
        try:
            await client.operator_service.add_search_attributes(request)
            return
        except RPCError as e:
            # Another worker starting at the same moment may have registered them first, or
            # be registering them now (the server answers Unavailable until its mapping settles).
            if "already" in str(e).lower():
                return
            if e.status is not RPCStatusCode.UNAVAILABLE or attempt == 4:
                raise
            await asyncio.sleep(0.5 * (attempt + 1))


def load_keyring(settings: Settings) -> Keyring:
    """The keys that seal secret tool fields; a malformed key stops the worker before any task."""
    inline = settings.secrets_key.get_secret_value() if settings.secrets_key else None
    created = not inline and not settings.secrets_key_file.exists()
    try:
        keyring = Keyring.load(inline, settings.secrets_key_file)
    except ValueError as e:
        raise SystemExit(f"airlock: refusing to start, the secrets key: {e}") from None
    if created:
        # Fine on one machine; several workers must share one key (docs/secrets.md).
        log.warning("secrets.development_key_created", path=str(settings.secrets_key_file), key_id=keyring.current)
    return keyring


def openai_provider(settings: Settings, registry: ToolRegistry) -> ModelProvider:
    return OpenAIProvider.from_settings(settings, registry)


def build_worker(
    client: Client,
    settings: Settings,
    *,
    task_queue: str | None = None,
    executor: concurrent.futures.Executor | None = None,
    extra_interceptors: list[Interceptor] | None = None,
    openai: ModelProvider | None = None,
    workflow_runner: WorkflowRunner = SANDBOX,
) -> Worker:
    policy = load_policy(settings.policy_path)
    registry = load_registry(settings.tool_module_list)
    # A rule over an argument the tool lacks, a fact its preview never gives or a literal of
    # another kind would fail closed on every call: refused here, as `airlock policy check` does.
    require_sound_rules(policy, registry.catalog(), str(settings.policy_path))
    engine = connect(settings.db)
    create_schema(engine)
    for setup in registry.schemas:
        setup(engine)
    runner = ToolRunner(registry, engine, settings.blob_threshold)
    secrets = ToolSecrets(registry, load_keyring(settings))
    store = ControlStore.open(settings.control_db)
    model = ModelActivities(openai or openai_provider(settings, registry), engine, SpendLedger(store.engine), secrets)
    context = RunContextActivities(
        policy, registry, settings.default_model, control_events_per_history=settings.control_events_per_history
    )
    gate = SwitchGate(store)
    workspace = WorkspaceActivities(client, settings.control_task_queue, gate)
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=[AgentRun, UndoRun, WorkspaceControl],
        workflow_runner=workflow_runner,
        max_concurrent_workflow_tasks=settings.max_concurrent_workflow_tasks,
        activities=[
            model.decide,
            RunStartActivities(context, workspace).start,
            context.pin_context,
            workspace.join,
            workspace.register,
            workspace.reserve,
            workspace.live_runs,
            workspace.switches,
            workspace.store_switches,
            workspace.closed_runs,
            UndoActivities(client).plan,
            *tool_activities(registry, runner, gate, secrets),
        ],
        activity_executor=executor or concurrent.futures.ThreadPoolExecutor(max_workers=TOOL_THREADS),
        # The Web UI's "current details" of a run, rendered when someone opens it.
        interceptors=[CurrentDetails(), *(extra_interceptors or [])],
        # On SIGTERM, running activities get this long to finish before the worker exits.
        graceful_shutdown_timeout=timedelta(seconds=30),
    )


def freeze_startup_heap() -> None:
    """Keeps what is loaded by now (the SDK, the tools, the policy), which lives as long as the
    process, out of the garbage collector's reach, so that a full collection walks only what runs
    allocate: it holds up every workflow task and activity of the process a quarter as long (about
    25 ms instead of 100). Garbage is collected first, so that none is kept forever."""
    gc.collect()
    gc.freeze()


async def run_worker(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    configure_logging(settings.log_level)
    try:
        require_sound_rules(
            load_policy(settings.policy_path),
            load_registry(settings.tool_module_list).catalog(),
            str(settings.policy_path),
        )
    except PolicyError as e:
        print(f"airlock: refusing to start, the policy has errors:\n{e}", file=sys.stderr)
        raise SystemExit(2) from None
    client = await connect_client(settings)
    await register_search_attributes(client)
    worker = build_worker(client, settings)
    freeze_startup_heap()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "worker.started",
        task_queue=settings.task_queue,
        address=settings.temporal_address,
        namespace=settings.namespace,
        policy=str(settings.policy_path),
    )
    async with worker:
        await stop.wait()
    log.info("worker.stopped")


def main() -> None:
    asyncio.run(run_worker())


if __name__ == "__main__":
    main()
