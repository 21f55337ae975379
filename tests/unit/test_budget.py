"""Budget arithmetic, without Temporal."""

import pytest

from contracts.models import Budget, BudgetUse, RunState
from workflows.budget import (
    OutOfBudget,
    check,
    exhausted,
    refused_by_workspace,
    remaining,
    repeated_call,
    state_too_large,
    wall_clock_ran_out_awaiting,
)
from workflows.ending import RunEnded


def test_each_limit_names_itself() -> None:
    limits = Budget(max_steps=2, max_tool_calls=3, max_tokens=100, max_cost_usd=0.5, max_wall_clock_s=60)
    assert exhausted(limits, BudgetUse(steps=2), before="model_call") == "max_steps: 2 of 2 steps used"
    assert exhausted(limits, BudgetUse(tool_calls=3), before="tool_call") == "max_tool_calls: 3 of 3 tool calls used"
    assert exhausted(limits, BudgetUse(tokens=100), before="model_call").startswith("max_tokens")
    assert exhausted(limits, BudgetUse(cost_usd=0.5), before="model_call").startswith("max_cost_usd")
    assert exhausted(limits, BudgetUse(wall_clock_s=60), before="tool_call").startswith("max_wall_clock_s")
    assert exhausted(limits, BudgetUse(steps=1, tool_calls=2), before="tool_call") is None


def test_a_free_model_is_not_stopped_by_a_zero_token_budget() -> None:
    limits = Budget(max_tokens=0, max_cost_usd=0)
    assert exhausted(limits, BudgetUse(), before="model_call", model_spends=False) is None
    assert exhausted(limits, BudgetUse(), before="model_call", model_spends=True).startswith("max_tokens")


def test_remaining_never_goes_negative() -> None:
    left = remaining(Budget(max_steps=1), BudgetUse(steps=5, cost_usd=9))
    assert left.steps == 0 and left.cost_usd == 0


def test_every_budget_ending_ends_the_run_budget_exhausted_with_its_reason() -> None:
    """Whatever runs out (a limit of the run's, the workspace's caps, the run's own size), the run
    ends in one state, `budget_exhausted`, and the reason names what ran out."""
    limits = Budget(max_steps=2, max_identical_calls=2)
    with pytest.raises(OutOfBudget) as steps:
        check(limits, BudgetUse(steps=2), before="model_call", model_spends=False)
    endings = [
        steps.value,
        refused_by_workspace("workspace acme: 3 of 3 concurrent runs are running (max_concurrent_runs)"),
        refused_by_workspace(None),
        wall_clock_ran_out_awaiting("apr-1-0"),
        state_too_large(1_500_000),
    ]
    assert all(isinstance(e, RunEnded) and e.state is RunState.BUDGET_EXHAUSTED for e in endings)
    assert [e.reason.split(":")[0].split(" (")[0] for e in endings] == [
        "max_steps",
        "workspace acme",
        "workspace daily spend cap",
        "max_wall_clock_s",
        "the run's state no longer fits a continue-as-new checkpoint",
    ]
    check(limits, BudgetUse(steps=1), before="model_call", model_spends=False)


def test_the_same_call_is_a_loop_only_past_the_limit() -> None:
    limits = Budget(max_identical_calls=2)
    repeated_call(limits, "orders.get_order", 2)
    with pytest.raises(OutOfBudget, match=r"max_identical_calls: orders\.get_order proposed 3 times"):
        repeated_call(limits, "orders.get_order", 3)
