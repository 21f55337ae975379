"""Names that cross Temporal, defined once here and used by both the definition and its callers:
every activity a workflow calls by name, and every signal, update and query of `AgentRun` and of
`WorkspaceControl`."""

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
# Windowed limits' counters in the control store: hold a call's charges, settle them after it.
LIMITS_RESERVE: Final = "limits.reserve"
LIMITS_SETTLE: Final = "limits.settle"


def prepare_activity_name(tool: str) -> str:
    return f"tool.{tool}.prepare"


def execute_activity_name(tool: str) -> str:
    return f"tool.{tool}"


class RunMessages:
    """`AgentRun`'s signals, update and queries."""

    APPROVE: Final = "approve"
    DENY: Final = "deny"
    DECIDE: Final = "decide"
    PAUSE: Final = "pause"
    RESUME: Final = "resume"
    WORKSPACE_SWITCH: Final = "workspace_switch"
    STATUS: Final = "status"
    TIMELINE: Final = "timeline"


class ControlMessages:
    """`WorkspaceControl`'s signals, updates and queries."""

    REGISTER: Final = "register"
    REGISTER_BATCH: Final = "register_batch"
    ADMISSION: Final = "admission"
    LEAVE: Final = "leave"
    RESERVE: Final = "reserve"
    SETTLE: Final = "settle"
    SPEND: Final = "spend"
    SWITCHES: Final = "switches"
    ACK: Final = "ack"
    SWITCH: Final = "switch"
    STATE: Final = "state"
