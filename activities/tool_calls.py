"""One pair of activities per tool: `tool.NAME.prepare` (validate, preview) and `tool.NAME`.

Generated from the registry at worker start so that the Web UI and histories name the tool that
ran (`tool.payments.create_refund`) instead of a generic dispatcher. They are synchronous: the
database driver is, and Temporal runs them on the worker's thread pool.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from opentelemetry import trace
from temporalio import activity

from activities.control_store import SwitchGate
from contracts.activity_io import ExecuteOutcome, Held, PrepareOutcome, ToolCallInput
from contracts.models import Effect
from contracts.names import execute_activity_name, prepare_activity_name
from policy.switches import held_by
from tools.base import Caller
from tools.registry import ToolRegistry
from tools.runner import ToolRunner
from tools.secret_guard import ToolSecrets

log = structlog.get_logger("airlock.tool")
tracer = trace.get_tracer("airlock")


def _bound(call: ToolCallInput) -> contextlib.AbstractContextManager[None]:
    return structlog.contextvars.bound_contextvars(
        run_id=call.workflow_id,
        workspace=call.workspace,
        step=call.step,
        tool=call.tool,
        call_index=call.index,
        attempt=activity.info().attempt,
    )


def tool_activities(
    registry: ToolRegistry, runner: ToolRunner, gate: SwitchGate | None = None, secrets: ToolSecrets | None = None
) -> list[Callable[..., Any]]:
    """`gate` reads the workspace's switches as a call starts; `secrets` seals and unseals the
    tools' secret fields (docs/secrets.md): a worker without it refuses every sealed argument."""
    activities: list[Callable[..., Any]] = []
    for tool in registry:
        held = _gate_for(tool.effect, gate)
        activities += [_prepare_for(tool.name, runner, secrets), _execute_for(tool.name, runner, held, secrets)]
    return activities


R = TypeVar("R")


def _caller(call: ToolCallInput) -> Caller:
    return Caller(workspace=call.workspace, requested_by=call.requested_by, agent=call.agent)


def _guarded(secrets: ToolSecrets | None, call: ToolCallInput, run: Callable[[], R]) -> R:
    """The tool call inside its sealing scope: secret arguments open just here, and what comes
    back holds them sealed."""
    return run() if secrets is None else secrets.call(call.workspace, call.tool, run)


def _gate_for(effect: Effect, gate: SwitchGate | None) -> Callable[[ToolCallInput], Held | None]:
    """What the workspace's switches say of a call of this tool, as it is about to start."""

    def held(call: ToolCallInput) -> Held | None:
        if not call.gate:
            return None
        if gate is None:
            return Held(reason="control_unreachable", error="this worker has no control store configured")
        try:
            # A write reads the store as it starts; a read may use a reading a moment old.
            switches = gate.switches(call.workspace, fresh=effect is not Effect.READ)
        except Exception as e:
            log.warning("tool.gate_unreadable", error=type(e).__name__)
            return Held(reason="control_unreachable", error=f"the control store cannot be read ({type(e).__name__})")
        reason = held_by(paused=switches.paused, safe_mode=switches.safe_mode, effect=effect)
        return None if reason is None else Held(reason=reason, switches=switches)

    return held


def _prepare_for(
    name: str, runner: ToolRunner, secrets: ToolSecrets | None
) -> Callable[[ToolCallInput], PrepareOutcome]:
    @activity.defn(name=prepare_activity_name(name))
    def prepare(call: ToolCallInput) -> PrepareOutcome:
        with _bound(call), tracer.start_as_current_span(f"tool.{name}.prepare") as span:
            span.set_attributes(
                {"airlock.run_id": call.workflow_id, "airlock.workspace": call.workspace, "airlock.tool": name}
            )
            outcome = _guarded(
                secrets,
                call,
                lambda: runner.prepare(
                    name, call.args, call.workflow_id, call.step, call.idempotency_key, _caller(call)
                ),
            )
            span.set_attribute("airlock.outcome", outcome.kind)
            log.info("tool.prepared", outcome=outcome.kind)
        return outcome

    return prepare


def _execute_for(
    name: str, runner: ToolRunner, held: Callable[[ToolCallInput], Held | None], secrets: ToolSecrets | None
) -> Callable[[ToolCallInput], ExecuteOutcome]:
    @activity.defn(name=execute_activity_name(name))
    def execute(call: ToolCallInput) -> ExecuteOutcome:
        with _bound(call), tracer.start_as_current_span(f"tool.{name}") as span:
            if (stop := held(call)) is not None:
                span.set_attribute("airlock.outcome", f"held:{stop.reason}")
                log.info("tool.held", reason=stop.reason)
                return stop
            span.set_attributes(
                {
                    "airlock.run_id": call.workflow_id,
                    "airlock.workspace": call.workspace,
                    "airlock.tool": name,
                    "airlock.idempotency_key": call.idempotency_key or "",
                }
            )
            outcome = _guarded(
                secrets,
                call,
                lambda: runner.execute(
                    name, call.args, call.idempotency_key or "", call.workflow_id, call.step, _caller(call)
                ),
            )
            span.set_attribute("airlock.outcome", outcome.kind)
            log.info(
                "tool.executed",
                outcome=outcome.kind,
                idempotency_key=call.idempotency_key,
                deduplicated=getattr(outcome, "deduplicated", False),
            )
        return outcome

    return execute
