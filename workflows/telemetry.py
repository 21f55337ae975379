"""What AgentRun reports to OpenTelemetry from workflow code: spans and metrics, replay-safe.

The run records each event once, in its timeline (`GovernedRun._record`), and that one call hands
the entry to `observe`, which decides what it reports: a policy decision, an approval resolved or
escalated, a model call charged, a run finished. Each must record exactly once per real event,
never again when a worker replays the history.

None of it is hand-rolled replay logic; it rests on temporalio's replay-safe providers, which
`runtime.tracing` installs:

- spans come from the process's `ReplaySafeTracerProvider`. A span started while the workflow
  replays history events gets the same deterministic ids as the first time (they come from the
  workflow's seeded random) and is never ended, so it is never exported; one started live is
  exported once. Timestamps are workflow time (`workflow.time_ns()`), not the wall clock. When no
  replay-safe provider is installed, no span is created at all.
- metrics go through `ReplaySafeMeterProvider`, which drops recordings made while the workflow
  replays history events.

Nothing here issues a command, so telemetry never adds an event to the history. The sandbox loads
a copy of this module for every workflow; the state it uses (providers, instruments) lives in
modules passed through from the worker process.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from opentelemetry.trace import get_current_span, get_tracer_provider
    from temporalio.contrib.opentelemetry import ReplaySafeTracerProvider

    from contracts.models import BudgetUse, TimelineEntry
    from runtime.instruments import SCOPE, run_metrics

if TYPE_CHECKING:
    from opentelemetry.util.types import AttributeValue


def _span(name: str, attributes: Mapping[str, AttributeValue], *, seconds_before: float = 0.0) -> None:
    """A finished span, child of the workflow's current span, ending at workflow time now."""
    provider = get_tracer_provider()
    if not isinstance(provider, ReplaySafeTracerProvider):
        return
    end = workflow.time_ns()
    start = end - max(0, round(seconds_before * 1e9))
    span = provider.get_tracer(SCOPE).start_span(name, attributes=attributes, start_time=start)
    span.end(end_time=end)


def _run(workflow_id: str, workspace: str, agent: str) -> dict[str, AttributeValue]:
    return {"airlock.run_id": workflow_id, "airlock.workspace": workspace, "airlock.agent": agent}


def policy_decided(*, workflow_id: str, workspace: str, agent: str, tool: str, outcome: str, rule: str) -> None:
    """A policy decision on one call (counts tool calls by decision)."""
    _span(
        "airlock.policy_decision",
        {**_run(workflow_id, workspace, agent), "airlock.tool": tool, "airlock.outcome": outcome, "airlock.rule": rule},
    )
    run_metrics().tool_calls.add(
        1, {"workspace": workspace, "agent": agent, "tool": tool, "outcome": outcome, "rule": rule}
    )


def approval_resolved(
    *, workflow_id: str, workspace: str, agent: str, tool: str, outcome: str, waited_s: float
) -> None:
    """An approval wait ended: approved, denied or expired, after `waited_s` seconds."""
    _span(
        "airlock.approval_wait",
        {
            **_run(workflow_id, workspace, agent),
            "airlock.tool": tool,
            "airlock.outcome": outcome,
            "airlock.waited_s": waited_s,
        },
        seconds_before=waited_s,
    )
    run_metrics().approval_wait.record(waited_s, {"workspace": workspace, "tool": tool, "outcome": outcome})


def approval_escalated(*, workflow_id: str, workspace: str, agent: str, tool: str) -> None:
    """A pending approval passed its tier's escalation time."""
    _span("airlock.approval_escalated", {**_run(workflow_id, workspace, agent), "airlock.tool": tool})


def model_charged(*, workflow_id: str, workspace: str, agent: str, model: str, tokens: int, cost_usd: float) -> None:
    """Tokens and USD charged to the run by one model call."""
    # The model call's span is the `model.decide` activity's own, which carries these tokens and
    # this cost; this only counts them.
    labels = {"workspace": workspace, "agent": agent, "model": model}
    instruments = run_metrics()
    instruments.tokens.add(tokens, labels)
    instruments.cost_usd.add(cost_usd, labels)


def run_finished(*, workflow_id: str, workspace: str, agent: str, state: str, tokens: int, cost_usd: float) -> None:
    """The run reached a final state."""
    # The run's span is the workflow's own (`RunWorkflow:AgentRun`, opened by temporalio's
    # OpenTelemetry plugin and ended when the run returns); it gets the run's attributes here.
    # Setting attributes exports nothing by itself: the span is exported once, when it ends live.
    current = get_current_span()
    if current.is_recording():
        current.set_attributes(
            {
                **_run(workflow_id, workspace, agent),
                "airlock.state": state,
                "airlock.tokens": tokens,
                "airlock.cost_usd": cost_usd,
            }
        )
    run_metrics().runs.add(1, {"workspace": workspace, "agent": agent, "state": state})


def observe(entry: TimelineEntry, used: BudgetUse, *, workflow_id: str, workspace: str, agent: str) -> None:
    """What one timeline entry of the run reports to OpenTelemetry, if anything. `used` is the
    run's budget use as the entry is recorded."""
    run = {"workflow_id": workflow_id, "workspace": workspace, "agent": agent}
    data = entry.data if isinstance(entry.data, dict) else {}
    tool = entry.tool or ""
    if entry.kind == "decision":
        policy_decided(**run, tool=tool, outcome=entry.outcome or "", rule=entry.rule or "")
    elif entry.kind == "approval_resolved":
        waited = data.get("waited_s")
        approval_resolved(
            **run,
            tool=tool,
            outcome=entry.outcome or "",
            waited_s=float(waited) if isinstance(waited, int | float) else 0.0,
        )
    elif entry.kind == "approval_escalated":
        approval_escalated(**run, tool=tool)
    elif entry.kind == "model_call":
        tokens, cost = data.get("tokens"), data.get("cost_usd")
        model_charged(
            **run,
            model=str(data.get("model", "")),
            tokens=tokens if isinstance(tokens, int) else 0,
            cost_usd=float(cost) if isinstance(cost, int | float) else 0.0,
        )
    elif entry.kind == "run_finished":
        run_finished(**run, state=entry.outcome or "", tokens=used.tokens, cost_usd=used.cost_usd)
