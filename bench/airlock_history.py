"""Figure 1 for Airlock: history events and bytes per tool call, by difference of runs.

A run with N calls of one kind minus a run with none, divided by N, is the cost of one call:
the model's proposal, the preview, the decision, the approval and the execution, plus what the
call adds to the run's report. The same again from N to 2N shows whether that cost grows with
the length of the run.

Two model set-ups are measured. `scripted` is what tests and the demo use: the model runs as a
local activity (one marker). `activity model` routes the same proposals through the `openai`
provider path with a stub provider, so that the model call is a full activity carrying the
transcript, as with a real model: that is the like-for-like comparison with the peers, whose
model calls are always activities.
"""

from __future__ import annotations

import asyncio
import tempfile
from typing import Any

from temporalio.client import Client

from airlock.model_io import ModelDecision, ModelRequest, ProposedCall
from airlock.models import RunReport
from airlock.settings import Settings
from bench.common import CALLS, HistorySize, drive_approvals, history_size, new_id, result_or_stuck, run_input
from worker import build_worker

PLAN_PREFIX = "bench-plan"
JOB = ["read", "write", "denied"]
EXPECTED = {"read": "executed", "write": "executed", "denied": "denied"}


def check(report: RunReport, kinds: list[str]) -> None:
    """A figure is only worth printing if the run did what it was meant to: every call ended as
    intended and the run completed. Anything else (a loop guard, a budget) is raised, not measured."""
    calls = list(report.calls)
    got = [str(c.status) for c in calls][-len(kinds) :] if kinds else []
    want = [EXPECTED[k] for k in kinds]
    earlier = int(getattr(report, "earlier_calls", 0) or 0)
    if str(report.state) != "completed" or len(calls) + earlier != len(kinds) or got != want:
        raise RuntimeError(
            f"{report.workflow_id}: expected {len(kinds)} calls {sorted(set(want))} and a completed run, got "
            f"state {report.state} ({report.reason}), statuses {sorted(set(got))}"
        )


class StubProvider:
    """Stands in for the OpenAI provider: proposes the call named in the goal, N times.

    The goal reads `bench-plan:<kind>:<n>` (kind `job`: a read, a write, a denied call); the
    request's step says how far the run is.
    """

    async def decide(self, request: ModelRequest) -> ModelDecision:
        _, kind, n = request.goal.split(":")
        if request.step <= int(n):
            call = CALLS[JOB[request.step - 1]] if kind == "job" else CALLS[kind]
            return ModelDecision(
                calls=[ProposedCall(call_id=f"c{request.step}", tool=call["tool"], args=call["args"])],
                model="stub",
            )
        return ModelDecision(answer="done", model="stub")


def _input(kind: str, n: int, activity_model: bool) -> dict[str, Any]:
    if activity_model:
        raw = run_input([])
        raw["model"] = {"provider": "openai", "name": "stub"}
        raw["goal"] = f"{PLAN_PREFIX}:{kind}:{n}"
        raw["budget"]["max_steps"] = raw["budget"]["max_tool_calls"] = n + 5
        return raw
    return run_input([CALLS[kind]] * n)


async def one_run(client: Client, task_queue: str, kind: str, n: int, activity_model: bool) -> HistorySize:
    handle = await client.start_workflow(
        "AgentRun",
        _input(kind, n, activity_model),
        id=new_id(f"hist-{kind}-{n}"),
        task_queue=task_queue,
        result_type=RunReport,
    )
    if kind == "write" and n:
        await drive_approvals(handle, n)
    check(await result_or_stuck(handle), [kind] * n)
    return await history_size(client, handle.id)


async def measure(client: Client, n: int, activity_model: bool) -> dict[str, Any]:
    """{kind: {"base": size, "n": size, "2n": size}} for kinds read, write, denied."""
    with tempfile.TemporaryDirectory(prefix="airlock-bench-") as tmp:
        settings = Settings(db=f"{tmp}/backoffice.db", task_queue=new_id("bench-hist"))
        async with build_worker(client, settings, openai=StubProvider()):
            out: dict[str, Any] = {}
            base = await one_run(client, settings.task_queue, "read", 0, activity_model)
            for kind in ("read", "write", "denied"):
                sizes = [await one_run(client, settings.task_queue, kind, k, activity_model) for k in (n, 2 * n)]
                out[kind] = {"base": base, "n": sizes[0], "2n": sizes[1]}
            # The three-call job itself: one read, one approved write, one denied call.
            job = await three_call_job(client, settings.task_queue, activity_model)
            out["job"] = {"size": job, "base": base}
            return out


async def three_call_job(client: Client, task_queue: str, activity_model: bool) -> HistorySize:
    if activity_model:
        raw = _input("job", 3, True)
    else:
        raw = run_input([CALLS[kind] for kind in JOB])
    handle = await client.start_workflow(
        "AgentRun", raw, id=new_id("hist-job"), task_queue=task_queue, result_type=RunReport
    )
    await drive_approvals(handle, 1)
    check(await result_or_stuck(handle), JOB)
    return await history_size(client, handle.id)


async def measure_both(client: Client, n: int) -> dict[str, Any]:
    return {
        "scripted": await measure(client, n, activity_model=False),
        "activity_model": await measure(client, n, activity_model=True),
    }


if __name__ == "__main__":  # a quick look on its own: python -m bench.airlock_history
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from bench.common import binary
    from workflows.agent_run import SEARCH_ATTRIBUTES

    async def main() -> None:
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=binary("temporal"),
            data_converter=pydantic_data_converter,
            search_attributes=SEARCH_ATTRIBUTES,
            dev_server_log_level="error",
        )
        try:
            result = await measure_both(env.client, 3)
            for model, kinds in result.items():
                for kind, sizes in kinds.items():
                    print(model, kind, {k: (v.events, v.json_bytes, v.proto_bytes) for k, v in sizes.items()})
        finally:
            await env.shutdown()

    asyncio.run(main())
