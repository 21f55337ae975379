"""Budget arithmetic, without Temporal."""

from contracts.models import Budget, BudgetUse
from workflows.budget import exhausted, remaining


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
