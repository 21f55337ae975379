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
from typing import Any

from temporalio.client import Client

from bench.common import (
    CALLS,
    HistorySize,
    airlock_worker,
    control_worker,
    drive_approvals,
    history_size,
    new_id,
    plan_of,
    result_or_stuck,
    run_input,
    sizes_by_kind,
)
from contracts.model_io import ModelDecision, ModelRequest, ProposedCall
from contracts.models import RunReport

PLAN_PREFIX = "bench-plan"
EXPECTED = {"read": "executed", "write": "executed", "denied": "denied"}


def check(report: RunReport, kinds: list[str]) -> None:
    """A figure is only worth printing if the run did what it was meant to: every call ended as
    intended and the run completed. Anything else (a loop guard, a budget) is raised, not measured."""
    got = [str(c.status) for c in report.calls][-len(kinds) :] if kinds else []
    want = [EXPECTED[k] for k in kinds]
    if str(report.state) != "completed" or len(report.calls) + report.earlier_calls != len(kinds) or got != want:
        raise RuntimeError(
            f"{report.workflow_id}: expected {len(kinds)} calls {sorted(set(want))} and a completed run, got "
            f"state {report.state} ({report.reason}), statuses {sorted(set(got))}"
        )


class StubProvider:
    """Stands in for the OpenAI provider: proposes the calls planned in the goal, one per step.

    The goal reads `bench-plan:<kind>:<n>` (kind `job`: a read, a write, a denied call); the
    request's step says how far the run is.
    """

    async def decide(self, request: ModelRequest) -> ModelDecision:
        plan = plan_of(request.goal)
        if request.step <= len(plan):
            call = CALLS[plan[request.step - 1]]
            return ModelDecision(
                calls=[ProposedCall(call_id=f"c{request.step}", tool=call["tool"], args=call["args"])],
                model="stub",
            )
        return ModelDecision(answer="done", model="stub")


def _input(goal: str, activity_model: bool) -> dict[str, Any]:
    """The scripted model reads its calls from the script; the stub behind the activity reads
    them from the goal. The budget is the script's either way."""
    real_model = {"goal": goal, "model": {"provider": "openai", "name": "stub"}} if activity_model else {}
    return run_input([CALLS[k] for k in plan_of(goal)], **real_model)


async def one_run(client: Client, task_queue: str, kind: str, n: int, activity_model: bool) -> HistorySize:
    """One run of `n` calls of `kind` (`job`: the three-call job), checked, and its history's size."""
    goal = f"{PLAN_PREFIX}:{kind}:{n}"
    kinds = plan_of(goal)
    handle = await client.start_workflow(
        "AgentRun",
        _input(goal, activity_model),
        id=new_id("hist-job" if kind == "job" else f"hist-{kind}-{n}"),
        task_queue=task_queue,
        result_type=RunReport,
    )
    await drive_approvals(handle, kinds.count("write"))
    check(await result_or_stuck(handle), kinds)
    return await history_size(client, handle.id)


async def measure(client: Client, n: int, activity_model: bool) -> dict[str, Any]:
    """{kind: {"base": size, "n": size, "2n": size}} for kinds read, write, denied, and
    {"job": {"size": size, "base": size}} for the three-call job."""
    async with airlock_worker(client, new_id("bench-hist"), openai=StubProvider()) as settings:
        return await sizes_by_kind(lambda kind, k: one_run(client, settings.task_queue, kind, k, activity_model), n)


async def measure_both(client: Client, n: int) -> dict[str, Any]:
    return {
        "scripted": await measure(client, n, activity_model=False),
        "activity_model": await measure(client, n, activity_model=True),
    }


if __name__ == "__main__":  # a quick look on its own: python -m bench.airlock_history

    async def main() -> None:
        from worker import start_local_server

        async with await start_local_server() as env, control_worker(env.client):
            result = await measure_both(env.client, 3)
        for model, kinds in result.items():
            for kind, sizes in kinds.items():
                print(model, kind, {k: (v.events, v.json_bytes, v.proto_bytes) for k, v in sizes.items()})

    asyncio.run(main())
