"""What lists of runs show: a run's search attributes, published when they can be seen.

A run publishes its state (`AirlockState`, `AirlockWorkspace`, ...) when it first waits outside
its first workflow task, when a model call of it answers 2 s or more after it started, and when
it ends. A run that ends within
its first task publishes once, its final state.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import timedelta
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from contracts.models import RunReport, RunState
from runtime.settings import Settings
from tests.conftest import READ, Runs, call, run_input
from worker import build_worker
from workflows.search_attributes import STATE, WORKSPACE


async def published_states(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """The `AirlockState` values this run's history upserted, in order."""
    states = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
            if STATE.name in fields:
                states.append(fields[STATE.name].data.decode().strip('"'))
    return states


async def listed(client: Client, query: str, workflow_id: str, timeout: float = 10.0) -> bool:
    """Whether visibility lists the run under `query` within `timeout` (it trails the run)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if [w async for w in client.list_workflows(f'{query} AND WorkflowId="{workflow_id}"')]:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_a_run_that_ends_in_its_first_task_publishes_its_final_state_once(runs: Runs, client: Client) -> None:
    handle = await runs.start(script=[READ, READ])
    report = await handle.result()
    assert report.state is RunState.COMPLETED
    assert await published_states(handle) == ["completed"]
    assert await listed(client, 'AirlockState="completed" AND AirlockWorkspace="acme"', handle.id)
    description = await handle.describe()
    assert description.typed_search_attributes.get(WORKSPACE) == "acme"


async def test_a_continued_run_publishes_before_it_continues(runs: Runs) -> None:
    """The first run of the chain publishes `running` as it checkpoints; its successor inherits
    that, and publishes only its final state."""
    handle = await runs.start(steps_per_history=2, script=[READ, READ, READ])
    report = await handle.result()
    assert report.state is RunState.COMPLETED and report.runs_in_chain == 2
    first = runs.client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)
    assert await published_states(first) == ["running"]
    assert await published_states(runs.client.get_workflow_handle(handle.id)) == ["completed"]


async def test_a_run_paused_from_its_start_is_listed_as_paused(runs: Runs, client: Client) -> None:
    handle = await client.start_workflow(
        "AgentRun",
        run_input(script=[READ]),
        id=f"paused-{uuid.uuid4().hex[:8]}",
        task_queue=runs.settings.task_queue,
        result_type=RunReport,
        start_signal="pause",
        start_signal_args=[{"by": "u_ops", "reason": "freeze"}],
    )
    try:
        assert await listed(client, 'AirlockState="paused" AND AirlockWorkspace="acme"', handle.id)
    finally:
        with contextlib.suppress(Exception):
            await handle.terminate()


async def test_a_run_past_its_first_task_is_listed_while_it_runs(client: Client, fault_settings: Settings) -> None:
    """Local activities longer than the workflow task end that task (the worker heartbeats it):
    once the model answers after the first 2 s, the run is listed as running, before it ends."""
    async with build_worker(client, fault_settings):
        handle = await client.start_workflow(
            "AgentRun",
            run_input(script=[call("faults.slow", key="2"), call("faults.slow", key="4")]),
            id=f"slow-{uuid.uuid4().hex[:8]}",
            task_queue=fault_settings.task_queue,
            result_type=RunReport,
            task_timeout=timedelta(seconds=1),
        )
        seen_running = await listed(client, 'AirlockState="running" AND AirlockWorkspace="acme"', handle.id, 5.5)
        report = await handle.result()
    assert seen_running
    assert report.state is RunState.COMPLETED
    assert await published_states(handle) == ["running", "completed"]
