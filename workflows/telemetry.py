"""What AgentRun reports to OpenTelemetry from workflow code: spans and metrics, replay-safe.

Workflow code calls these at the moments that matter (a policy decision, an approval resolved, a
model call charged, a run finished). Each must record exactly once per real event, never again
when a worker replays the history.
"""

from __future__ import annotations


def policy_decided(*, workflow_id: str, workspace: str, agent: str, tool: str, outcome: str, rule: str) -> None:
    """A policy decision on one call (counts tool calls by decision)."""


def approval_resolved(
    *, workflow_id: str, workspace: str, agent: str, tool: str, outcome: str, waited_s: float
) -> None:
    """An approval wait ended: approved, denied or expired, after `waited_s` seconds."""


def model_charged(
    *, workflow_id: str, workspace: str, agent: str, model: str, tokens: int, cost_usd: float
) -> None:
    """Tokens and USD charged to the run by one model call."""


def run_finished(
    *, workflow_id: str, workspace: str, agent: str, state: str, tokens: int, cost_usd: float
) -> None:
    """The run reached a final state."""
