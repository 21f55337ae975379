"""The bare baseline for figure 2: the same agent loop on Temporal, with no governance.

`BareRun` does an agent's job the plainest way: it asks the model for its next call and runs the
call it proposes, until the model has no more. Both use Airlock's own activities with the
requests a run sends them: `model.decide` with the scripted provider, and `tool.NAME` against
the same database. What only governance needs is a stub in the same slot, so that the two run
exactly as many local activities: one at the start (Airlock's `run.start`: pinning the policy,
joining the workspace's control plane) and, at each step, one between the model and the tool
(Airlock's preparation: schema validation and preview). The difference between the two is
governance alone: the join, validation and preview, policy decisions, budgets, the timeline and
call records, search attributes and the report.
"""

# No `from __future__ import annotations`, as in `workflows/agent_run.py`: the sandbox imports
# this module for every run and Temporal reads the run's type hints each time.
import concurrent.futures
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from contracts import names
    from contracts.activity_io import ExecuteOutcome, ToolCallInput
    from contracts.model_io import ModelDecision, ModelRequest
    from contracts.models import ScriptedCall
    from workflows.governed_run import LOCAL  # the options of Airlock's own local activities

WORKSPACE = "acme"


@activity.defn(name="bare.pin")
def bare_pin() -> str:
    return "pinned"


@activity.defn(name="bare.prepare")
def bare_prepare(step: int) -> int:
    return step


@workflow.defn(name="BareRun")
class BareRun:
    @workflow.run
    async def run(self, goal: str, script: list[ScriptedCall]) -> int:
        await workflow.execute_local_activity(bare_pin, **LOCAL)  # type: ignore[arg-type]
        info = workflow.info()
        step = 0
        while True:
            step += 1
            request = ModelRequest(
                workflow_id=info.workflow_id,
                workspace=WORKSPACE,
                step=step,
                provider="scripted",
                goal=goal,
                scripted=script[step - 1] if step <= len(script) else None,
            )
            decision = await workflow.execute_local_activity(
                names.MODEL_DECIDE,
                request,
                result_type=ModelDecision,
                **LOCAL,  # type: ignore[arg-type]
            )
            if not decision.calls:
                return step - 1
            await workflow.execute_local_activity(bare_prepare, step, **LOCAL)  # type: ignore[arg-type]
            for index, call in enumerate(decision.calls):
                await workflow.execute_local_activity(
                    f"tool.{call.tool}",
                    ToolCallInput(
                        workflow_id=info.workflow_id,
                        workspace=WORKSPACE,
                        step=step,
                        index=index,
                        tool=call.tool,
                        args=call.args,
                        idempotency_key=f"{info.workflow_id}/{info.first_execution_run_id}/s{step}/c{index}",
                    ),
                    result_type=ExecuteOutcome,  # type: ignore[arg-type]
                    **LOCAL,  # type: ignore[arg-type]
                )


def bare_job(script: list[dict[str, Any]]) -> list[Any]:
    """`BareRun`'s arguments for a script: the goal and the proposals an Airlock run of the same
    script is given (`bench.common.run_input`)."""
    from bench.common import run_input

    raw = run_input(script)
    return [raw["goal"], raw["model"]["script"]]


def build_bare_worker(client: Client, task_queue: str, db: str, **options: Any) -> Worker:
    """A worker configured as `worker.build_worker` configures Airlock's (same executor size,
    same workflow-task slots, same shutdown grace), running `BareRun` and Airlock's model and tool
    activities."""
    from activities.model_decide import ModelActivities
    from activities.tool_calls import tool_activities
    from bench.common import backoffice_runner
    from runtime.settings import TOOL_THREADS, Settings

    runner = backoffice_runner(db)
    activities: list[Any] = [
        bare_pin,
        ModelActivities().decide,
        bare_prepare,
        *tool_activities(runner.registry, runner),
    ]
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
