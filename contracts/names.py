"""Names that cross Temporal: every activity a workflow calls by name, defined once here and used
by both the activity's definition and its callers."""

from __future__ import annotations

from typing import Final

# A run's start: pin the policy, tools and settings (and join the workspace, in one).
RUN_START: Final = "run.start"
RUN_PIN_CONTEXT: Final = "run.pin_context"
# One step of the model.
MODEL_DECIDE: Final = "model.decide"
# The workspace's control plane: the control store and the control workflow.
WORKSPACE_SWITCHES: Final = "workspace.switches"
WORKSPACE_STORE_SWITCHES: Final = "workspace.store_switches"
WORKSPACE_RESERVE: Final = "workspace.reserve"
WORKSPACE_REGISTER: Final = "workspace.register"
WORKSPACE_JOIN: Final = "workspace.join"
WORKSPACE_LIVE_RUNS: Final = "workspace.live_runs"
WORKSPACE_CLOSED_RUNS: Final = "workspace.closed_runs"


def prepare_activity_name(tool: str) -> str:
    return f"tool.{tool}.prepare"


def execute_activity_name(tool: str) -> str:
    return f"tool.{tool}"
