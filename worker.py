"""Airlock's worker: wires the client, the AgentRun workflow and its activities together.

Configuration comes from the environment (see `runtime.settings`). A policy file or a tool module
that does not load, or a Temporal server that does not answer, stops the worker before it takes
any task, in one line naming the file, the module or the address (`runtime.exits`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import signal
from datetime import timedelta
from typing import NamedTuple

import structlog
from pydantic import ValidationError
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
from activities.limit_ledger import LimitLedger
from activities.limits import LimitActivities
from activities.model_decide import ModelActivities, ModelProvider
from activities.openai_provider import OpenAIProvider
from activities.run_context import RunContextActivities, RunStartActivities
from activities.tool_calls import tool_activities
from activities.workspace import WorkspaceActivities
from contracts.policy import Policy
from policy import PolicyError, load_policy
from policy.check import require_sound_rules
from recorder.undo_plan import UndoActivities
from runtime.binaries import binary
from runtime.connection import connect_client
from runtime.converter import data_converter
from runtime.exits import ExitError, ExitStatus, StartupError, exit_process, say
from runtime.logging import configure_logging
from runtime.sealing import Keyring
from runtime.settings import TOOL_THREADS, Settings, settings_error
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
        # What the policy's text tests normalise with (contracts.textnorm) and its patterns run
        # on: pure, loaded once; imported lazily inside a run, they would be imported per run.
        "idna",
        "re2",
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


__all__ = ["SANDBOX", "Loaded", "build_worker", "connect_client", "preflight", "register_search_attributes", "serve"]


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
        raise StartupError(f"refusing to start, the secrets key: {e}") from None
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
    loaded: Loaded | None = None,
) -> Worker:
    """A worker for the policy and tools `preflight` loaded (`loaded`), or loads them now: the
    worker runs exactly what was checked, even if the file changes in between."""
    policy, registry = loaded if loaded is not None else preflight(settings)
    engine = connect(settings.db)
    create_schema(engine)
    for setup in registry.schemas:
        setup(engine)
    runner = ToolRunner(registry, engine, settings.blob_threshold)
    secrets = ToolSecrets(registry, load_keyring(settings))
    store = ControlStore.open(settings.control_db)
    ledger = LimitLedger(store.engine)
    ledger.create_schema()
    limits = LimitActivities(ledger)
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
            limits.reserve,
            limits.settle,
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


class Loaded(NamedTuple):
    """The policy and the tools a worker runs, loaded and checked together."""

    policy: Policy
    registry: ToolRegistry


def preflight(settings: Settings) -> Loaded:
    """What the worker loads before it takes a task, loaded once before anything starts (a client,
    a dev server): a policy or a tool module that does not load is `StartupError`, one line naming
    the file or the module. `airlock worker` and `airlock dev` both call it, and hand what it
    loaded to `build_worker`."""
    try:
        policy = load_policy(settings.policy_path)
    except PolicyError as e:
        raise _policy_refused(e, settings) from None
    for module in settings.tool_module_list:
        try:
            load_registry([module])
        except Exception as e:  # any error of its own import: a missing name, a syntax error
            raise StartupError(
                f"refusing to start, tool module {module!r} (AIRLOCK_TOOL_MODULES) does not load: "
                f"{type(e).__name__}: {_first_line(e)}"
            ) from None
    try:
        registry = load_registry(settings.tool_module_list)
    except ValueError as e:  # each loads, together they do not: a tool defined twice
        raise StartupError(f"refusing to start, the tool modules (AIRLOCK_TOOL_MODULES): {e}") from None
    try:
        # A rule over an argument the tool lacks, a fact its preview never gives or a literal of
        # another kind would fail closed on every call: refused, as `airlock policy check` does.
        require_sound_rules(policy, registry.catalog(), str(settings.policy_path))
    except PolicyError as e:
        raise _policy_refused(e, settings) from None
    return Loaded(policy, registry)


def _policy_refused(error: PolicyError, settings: Settings) -> StartupError:
    problems = str(error).splitlines()
    more = f" (and {len(problems) - 1} more; `airlock policy check {settings.policy_path}` lists them)"
    return StartupError(
        f"refusing to start, the policy does not load: {problems[0]}{more if len(problems) > 1 else ''}"
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "(no message)"


async def run_worker(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    configure_logging(settings.log_level)
    loaded = preflight(settings)
    client = await connect_client(settings)
    await register_search_attributes(client)
    worker = build_worker(client, settings, loaded=loaded)
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


def serve() -> int:
    """Runs the worker until SIGINT or SIGTERM, which is its normal end (status 0, after draining);
    the exit status otherwise (docs/cli.md)."""
    try:
        asyncio.run(run_worker())
    except ExitError as e:
        return say(e)
    except ValidationError as e:
        if (bad := settings_error(e)) is None:
            raise
        return say(bad)
    except KeyboardInterrupt:  # before the signal handlers are installed
        return ExitStatus.INTERRUPTED
    return ExitStatus.OK


def main() -> None:
    exit_process(serve())


if __name__ == "__main__":
    main()
