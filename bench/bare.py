"""The bare baseline for figure 2: Temporal with no governance, same activities, same worker.

`BareRun` runs exactly as many local activities as an `AgentRun` of N allowed reads under the
scripted model: one at the start (Airlock's `run.start`), then for each step a model
proposal, a preparation and the tool itself, and a last model call that finishes. The tool
slot runs Airlock's own `tool.orders.get_order` activity against the same database, so the
difference between the two is governance alone: joining the workspace's control plane, schema
validation and preview, policy decisions, budgets, the timeline and call records, search
attributes and the report.
"""

from __future__ import annotations

import concurrent.futures
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from airlock.activity_io import ExecuteOutcome, ToolCallInput

# Same options as Airlock's local activities (workflows.governed_run.LOCAL).
LOCAL = dict(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(seconds=10)),
)
TOOL = "orders.get_order"


@activity.defn(name="bare.pin")
def bare_pin() -> str:
    return "pinned"


@activity.defn(name="bare.model")
async def bare_model(step: int, steps: int) -> bool:
    return step <= steps


@activity.defn(name="bare.prepare")
def bare_prepare(step: int) -> int:
    return step


@workflow.defn(name="BareRun")
class BareRun:
    @workflow.run
    async def run(self, steps: int) -> int:
        await workflow.execute_local_activity(bare_pin, **LOCAL)  # type: ignore[arg-type]
        info = workflow.info()
        step = 0
        while True:
            step += 1
            more = await workflow.execute_local_activity(bare_model, args=[step, steps], **LOCAL)  # type: ignore[arg-type]
            if not more:
                return step - 1
            await workflow.execute_local_activity(bare_prepare, step, **LOCAL)  # type: ignore[arg-type]
            await workflow.execute_local_activity(
                f"tool.{TOOL}",
                ToolCallInput(
                    workflow_id=info.workflow_id,
                    workspace="acme",
                    step=step,
                    index=0,
                    tool=TOOL,
                    args={"order_id": "ORD-1001"},
                    idempotency_key=f"{info.workflow_id}/{info.first_execution_run_id}/s{step}/c0",
                ),
                result_type=ExecuteOutcome,  # type: ignore[arg-type]
                **LOCAL,  # type: ignore[arg-type]
            )


def build_bare_worker(client: Client, task_queue: str, db: str, **options: Any) -> Worker:
    """A worker configured as `worker.build_worker` configures Airlock's (same executor size,
    same workflow-task slots, same shutdown grace), running `BareRun` and Airlock's tool
    activities."""
    from activities.tool_calls import tool_activities
    from airlock.settings import TOOL_THREADS, Settings
    from bench.common import backoffice_runner

    runner = backoffice_runner(db)
    activities: list[Any] = [bare_pin, bare_model, bare_prepare, *tool_activities(runner.registry, runner)]
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[BareRun],
        activities=activities,
        **options,
        activity_executor=concurrent.futures.ThreadPoolExecutor(max_workers=TOOL_THREADS),
        max_concurrent_workflow_tasks=Settings().max_concurrent_workflow_tasks,
        graceful_shutdown_timeout=timedelta(seconds=30),
    )
