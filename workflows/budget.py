"""Every way a run can end `budget_exhausted`, decided here: its own limits (steps, tool calls,
tokens, USD, wall clock, identical calls), the workspace's (concurrency cap, daily spend cap),
and the size of its state. Pure, so the workflow's checks are easy to read and to test; each
raises `OutOfBudget`, which the run's loop turns into the final state."""

from __future__ import annotations

from typing import Literal

from contracts.models import Budget, BudgetUse, RunState
from workflows.ending import RunEnded


class OutOfBudget(RunEnded):
    """The run ends `budget_exhausted`, for `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(RunState.BUDGET_EXHAUSTED, reason)


def check(limits: Budget, used: BudgetUse, *, before: Literal["model_call", "tool_call"], model_spends: bool) -> None:
    """Raises OutOfBudget when the next model or tool call may not start."""
    reason = exhausted(limits, used, before=before, model_spends=model_spends)
    if reason is not None:
        raise OutOfBudget(reason)


def refused_by_workspace(reason: str | None) -> OutOfBudget:
    """The workspace's control plane refused the run a slot (max_concurrent_runs) or spend (the
    daily cap): `reason` is its words."""
    return OutOfBudget(reason or "workspace daily spend cap")


def repeated_call(limits: Budget, tool: str, seen: int) -> None:
    """Raises OutOfBudget when the same call (tool and arguments) was proposed once too often."""
    if seen > limits.max_identical_calls:
        raise OutOfBudget(
            f"max_identical_calls: {tool} proposed {seen} times with the same arguments "
            f"(limit {limits.max_identical_calls})"
        )


def wall_clock_ran_out_awaiting(approval_id: str) -> OutOfBudget:
    """The run's wall clock ended while a call waited for approval: it outranks the tier's timeout."""
    return OutOfBudget(f"max_wall_clock_s: reached while {approval_id} awaited approval")


def state_too_large(limit: int) -> OutOfBudget:
    """The run's state no longer fits a continue-as-new checkpoint: one over Temporal's payload
    limit would fail the workflow task forever."""
    return OutOfBudget(f"the run's state no longer fits a continue-as-new checkpoint ({limit} bytes)")


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
