"""Budget arithmetic: pure, so the workflow's checks are easy to read and to test."""

from __future__ import annotations

from typing import Literal

from contracts.models import Budget, BudgetUse


def exhausted(
    limits: Budget,
    used: BudgetUse,
    *,
    before: Literal["model_call", "tool_call"],
    model_spends: bool = True,
) -> str | None:
    """Why the next model or tool call may not start, or None when it may.

    Tokens and USD are spent only by model calls of a provider that charges for them; a
    scripted model costs nothing, so a zero token budget does not stop it.
    """
    if used.wall_clock_s >= limits.max_wall_clock_s:
        return f"max_wall_clock_s: {used.wall_clock_s:.0f} of {limits.max_wall_clock_s} s used"
    if before == "model_call":
        if used.steps >= limits.max_steps:
            return f"max_steps: {used.steps} of {limits.max_steps} steps used"
        if used.tokens > limits.max_tokens or (model_spends and used.tokens >= limits.max_tokens):
            return f"max_tokens: {used.tokens} of {limits.max_tokens} tokens used"
        if used.cost_usd > limits.max_cost_usd or (model_spends and used.cost_usd >= limits.max_cost_usd):
            return f"max_cost_usd: {used.cost_usd:.4f} of {limits.max_cost_usd} USD used"
    if before == "tool_call":
        if used.tool_calls >= limits.max_tool_calls:
            return f"max_tool_calls: {used.tool_calls} of {limits.max_tool_calls} tool calls used"
        if used.tokens > limits.max_tokens:
            return f"max_tokens: {used.tokens} of {limits.max_tokens} tokens used"
        if used.cost_usd > limits.max_cost_usd:
            return f"max_cost_usd: {used.cost_usd:.4f} of {limits.max_cost_usd} USD used"
    return None


def remaining(limits: Budget, used: BudgetUse) -> BudgetUse:
    return BudgetUse(
        steps=max(0, limits.max_steps - used.steps),
        tool_calls=max(0, limits.max_tool_calls - used.tool_calls),
        tokens=max(0, limits.max_tokens - used.tokens),
        cost_usd=max(0.0, limits.max_cost_usd - used.cost_usd),
        wall_clock_s=max(0.0, limits.max_wall_clock_s - used.wall_clock_s),
    )
