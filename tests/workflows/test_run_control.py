"""Budgets, stop, pause and resume, bad input, continue-as-new, and exactly-once writes."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from sqlalchemy import Engine
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from contracts.models import CallStatus, DecideResult, RunState
from recorder.flight_recorder import record_of
from runtime.settings import Settings
from tests.conftest import READ, REFUND_120, Runs, call, count_rows, recorded_openai_provider, run_input
from tools.backoffice.db import refunds
from worker import build_worker


@pytest.mark.parametrize(
    ("budget", "script", "reason", "executed"),
    [
        ({"max_steps": 2}, [READ, READ, READ], "max_steps: 2 of 2 steps used", 2),
        ({"max_tool_calls": 2}, [READ, READ, READ], "max_tool_calls: 2 of 2 tool calls used", 2),
    ],
)
async def test_step_and_tool_call_budgets_end_the_run_with_a_report(
    runs: Runs, budget: dict[str, int], script: list[dict[str, Any]], reason: str, executed: int
) -> None:
    """Exhausting a budget ends the run `budget_exhausted` with the reason, never a crash."""
    handle = await runs.start(budget=budget, script=script)
    report = await handle.result()
    assert report.state is RunState.BUDGET_EXHAUSTED
    assert report.reason == reason
    assert sum(c.status is CallStatus.EXECUTED for c in report.calls) == executed


async def test_wall_clock_budget_ends_a_run_waiting_for_approval(runs: Runs, db: Engine) -> None:
    """An approval wait never outlives the run's wall-clock budget."""
    handle = await runs.start(mode="approve", budget={"max_wall_clock_s": 1}, script=[REFUND_120])
    report = await handle.result()
    assert report.state is RunState.BUDGET_EXHAUSTED
    assert report.reason.startswith("max_wall_clock_s")
    assert count_rows(db, refunds) == 0


@pytest.mark.parametrize(
    ("budget", "reason"),
    [
        ({"max_tokens": 400}, "max_tokens: 469 of 400 tokens used"),
        ({"max_cost_usd": 0.00005}, "max_cost_usd: 0.0001 of 5e-05 USD used"),
    ],
)
async def test_token_and_usd_budgets_stop_a_real_model(
    client: Client, settings: Settings, budget: dict[str, Any], reason: str
) -> None:
    """Tokens and USD reported by the model are charged to the run; past the limit no tool
    call starts, and the report shows the cost by step."""
    async with build_worker(client, settings, openai=recorded_openai_provider(settings)):
        handle = await Runs(client, settings).start(model={"provider": "openai", "name": "gpt-4o-mini"}, budget=budget)
        report = await handle.result()
    assert report.state is RunState.BUDGET_EXHAUSTED
    assert report.reason == reason
    assert report.calls == []
    assert report.used.tokens == 469
    assert report.cost_by_step[0].prompt_tokens == 412 and report.cost_by_step[0].completion_tokens == 57
    assert report.cost_by_step[0].cost_usd == pytest.approx((412 * 0.15 + 57 * 0.60) / 1_000_000)
    assert report.model == "openai:gpt-4o-mini"


async def test_openai_proposals_are_governed_like_any_other(client: Client, settings: Settings) -> None:
    """A real model's proposals pass the same airlock: an invented tool is refused as unknown."""
    async with build_worker(client, settings, openai=recorded_openai_provider(settings)):
        handle = await Runs(client, settings).start(
            model={"provider": "openai", "name": "gpt-4o-mini"}, budget={"max_steps": 1}
        )
        report = await handle.result()
    assert report.state is RunState.BUDGET_EXHAUSTED
    assert [c.tool for c in report.calls] == ["orders.get_order", "payments.create_refund", "shell__exec"]
    assert report.calls[0].status is CallStatus.FAILED  # A-1001 is not an order here
    assert report.calls[2].status is CallStatus.INVALID and "unknown tool" in report.calls[2].error


async def test_cancel_is_the_stop_button(runs: Runs, db: Engine) -> None:
    """`temporal workflow cancel` ends the run `stopped` with a report; the pending call never runs."""
    handle = await runs.start(mode="approve", script=[READ, REFUND_120])
    await runs.pending(handle)
    await handle.cancel()
    report = await handle.result()
    assert report.state is RunState.STOPPED
    assert report.calls[0].status is CallStatus.EXECUTED
    assert report.calls[1].status is CallStatus.STOPPED
    assert count_rows(db, refunds) == 0


async def test_pause_holds_even_an_approved_call_until_resume(runs: Runs, db: Engine) -> None:
    """While paused no new step starts and no call executes; resume lets the run go on."""
    handle = await runs.start(mode="approve", script=[REFUND_120, READ])
    status = await runs.pending(handle)
    await handle.signal("pause", {"by": "u_ops", "reason": "incident 42"})
    await handle.signal("approve", {"approval_id": status.pending_approvals[0].approval_id, "approver": "u_bob"})
    paused = await runs.wait_for(handle, lambda s: s.state.value == "paused")
    assert paused.paused_by == "u_ops"
    await asyncio.sleep(0.3)
    assert count_rows(db, refunds) == 0
    await handle.signal("pause", {"by": 42})  # malformed: recorded, changes nothing
    await handle.signal("resume", {"by": "u_ops", "reason": "resolved"})
    report = await handle.result()
    assert report.state is RunState.COMPLETED
    assert count_rows(db, refunds) == 1


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"goal": 5, "workspace": "acme", "requested_by": "u_alice"}, "goal: Input should be a valid string"),
        ({"workspace": "acme", "requested_by": "u_alice"}, "goal: Field required"),
        ({**run_input(), "colour": "red"}, "colour: Extra inputs are not permitted"),
        ({**run_input(), "budget": {"max_steps": "many"}}, "budget.max_steps: Input should be a valid integer"),
        ("refund everything", "Input should be a valid dictionary"),
        ({**run_input(), "requested_by": "u_dave"}, "requested_by: 'u_dave' holds no role allowed to start runs"),
        ({**run_input(), "workspace": "nowhere"}, "workspace: 'nowhere' is not defined in the policy"),
    ],
)
async def test_malformed_run_input_fails_fast_naming_the_field(runs: Runs, raw: Any, named: str) -> None:
    """Bad input fails the run at once, non-retryable, with a message naming what is wrong."""
    handle = await runs.start_raw(raw)
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), timeout=10)
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.non_retryable
    assert named in cause.message


class LoseFirstCompletion(Interceptor):
    """Simulates a worker that commits a write and dies before reporting it done."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _LoseFirst(next)


class _LoseFirst(ActivityInboundInterceptor):
    attempts: ClassVar[list[int]] = []

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        result = await self.next.execute_activity(input)
        info = activity.info()
        if info.activity_type == "tool.payments.create_refund":
            _LoseFirst.attempts.append(info.attempt)
            if info.attempt == 1:
                raise RuntimeError("worker lost the completion after the write committed")
        return result


async def test_write_retried_after_commit_is_not_repeated(client: Client, settings: Settings, db: Engine) -> None:
    """The retry finds the first attempt's result under the same idempotency key: one refund row."""
    async with build_worker(client, settings, extra_interceptors=[LoseFirstCompletion()]):
        handle = await Runs(client, settings).start(
            script=[call("payments.create_refund", order_id="ORD-1001", amount_usd=30, reason="damaged")]
        )
        report = await handle.result()
    assert _LoseFirst.attempts == [1, 2]
    assert report.calls[0].status is CallStatus.EXECUTED
    assert count_rows(db, refunds) == 1


async def test_continue_as_new_carries_budget_steps_and_decided_approvals(runs: Runs, db: Engine) -> None:
    """A long run checkpoints its history and keeps counting: budgets, step numbers, approvals."""
    email = call("email.send", to="dana@example.com", subject="Your refund", body="Done.")
    handle = await runs.start(
        mode="approve",
        steps_per_history=2,
        budget={"max_steps": 6, "max_identical_calls": 10},
        script=[REFUND_120, READ, READ, email, READ, READ, READ],
    )
    first = (await runs.pending(handle)).pending_approvals[0].approval_id
    await handle.signal("approve", {"approval_id": first, "approver": "u_bob"})
    second = await runs.wait_for(
        handle, lambda s: bool(s.pending_approvals) and s.pending_approvals[0].approval_id != first
    )
    assert second.step == 4
    vote = {"approver": "u_carol", "decision": "deny"}
    late = await handle.execute_update("decide", {"approval_id": first, **vote}, result_type=DecideResult)
    assert not late.accepted and late.reason == f"approval {first} is already decided"
    denied = await handle.execute_update(
        "decide", {"approval_id": second.pending_approvals[0].approval_id, **vote}, result_type=DecideResult
    )
    assert denied.accepted
    report = await handle.result()
    assert report.state is RunState.BUDGET_EXHAUSTED and report.reason.startswith("max_steps: 6")
    assert report.runs_in_chain == 3
    # The report holds the last run's calls; what changed and how to undo it covers the chain.
    assert [c.step for c in report.calls] == [5, 6] and report.earlier_calls == 4
    assert [(c.step, c.tool, c.votes[0].approver) for c in report.changes] == [(1, "payments.create_refund", "u_bob")]
    assert report.undo[0].tool == "payments.void_refund"
    # The flight recorder joins the chain's histories back into one record.
    full = await record_of(runs.client, handle.id)
    assert [c.step for c in full.calls] == [1, 2, 3, 4, 5, 6]
    assert full.calls[3].status is CallStatus.REJECTED
    assert [e.kind for e in full.memory.timeline].count("continued_as_new") == 2
    assert count_rows(db, refunds) == 1
