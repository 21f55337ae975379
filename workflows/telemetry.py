"""What AgentRun reports to OpenTelemetry from workflow code: spans and metrics, replay-safe.

Workflow code calls these at the moments that matter (a policy decision, an approval resolved, a
model call charged, a run finished). Each must record exactly once per real event, never again
when a worker replays the history.

Nothing here is hand-rolled replay logic; it rests on temporalio's replay-safe providers:

- spans come from the process's `ReplaySafeTracerProvider` (installed by `airlock.tracing`). A
  span started while the workflow replays history events gets the same deterministic ids as the
  first time (they come from the workflow's seeded random) and is never ended, so it is never
  exported; one started live is exported once. Timestamps are workflow time (`workflow.time_ns()`),
  never the wall clock. When no replay-safe provider is installed, no span is created at all.
- metrics go through `ReplaySafeMeterProvider`, which drops recordings made while the workflow
  replays history events.

None of this touches the workflow's commands: no history event is ever written for telemetry.
This module is imported through the sandbox's pass-through, so its state is the worker
process's, shared by every workflow.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from opentelemetry import metrics, trace
from opentelemetry.util.types import AttributeValue
from temporalio import workflow
from temporalio.contrib.opentelemetry import ReplaySafeMeterProvider, ReplaySafeTracerProvider

SCOPE = "airlock"

# Approval waits run from seconds (an approver at the keyboard) to days (a tier's timeout).
APPROVAL_WAIT_BUCKETS_S = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200)


class _Instruments:
    def __init__(self, provider: metrics.MeterProvider) -> None:
        if not isinstance(provider, ReplaySafeMeterProvider):
            provider = ReplaySafeMeterProvider(provider)
        meter = provider.get_meter(SCOPE)
        self.runs = meter.create_counter(
            "airlock.runs", unit="{run}", description="Runs that reached a final state."
        )
        self.tool_calls = meter.create_counter(
            "airlock.tool_calls", unit="{call}", description="Proposed tool calls, by policy decision and rule."
        )
        self.approval_wait = meter.create_histogram(
            "airlock.approval_wait",
            unit="s",
            description="How long a call waited for its approval, by how the wait ended.",
            explicit_bucket_boundaries_advisory=APPROVAL_WAIT_BUCKETS_S,
        )
        self.tokens = meter.create_counter(
            "airlock.tokens", unit="{token}", description="Model tokens charged to runs."
        )
        self.cost_usd = meter.create_counter(
            "airlock.cost_usd", unit="USD", description="Model cost charged to runs, in US dollars."
        )


_lock = threading.Lock()
_instruments: _Instruments | None = None


def use_meter_provider(provider: metrics.MeterProvider | None) -> None:
    """Records the metrics through `provider` (wrapped replay-safe if it is not already).

    `None` goes back to the process-global meter provider. `airlock.tracing` calls this when it
    sets up the worker's telemetry; tests call it to read the metrics from their own reader.
    """
    global _instruments
    with _lock:
        _instruments = None if provider is None else _Instruments(provider)


def _metrics() -> _Instruments:
    global _instruments
    with _lock:
        if _instruments is None:
            # The global provider is a proxy until one is installed; instruments made from it
            # start recording once it is.
            _instruments = _Instruments(metrics.get_meter_provider())
        return _instruments


def _span(name: str, attributes: Mapping[str, AttributeValue], *, seconds_before: float = 0.0) -> None:
    """A finished span, child of the workflow's current span, ending at workflow time now."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, ReplaySafeTracerProvider):
        return
    end = workflow.time_ns()
    start = end - max(0, round(seconds_before * 1e9))
    span = provider.get_tracer(SCOPE).start_span(name, attributes=attributes, start_time=start)
    span.end(end_time=end)


def _run_attributes(workflow_id: str, workspace: str, agent: str) -> dict[str, AttributeValue]:
    return {"airlock.run_id": workflow_id, "airlock.workspace": workspace, "airlock.agent": agent}


def policy_decided(*, workflow_id: str, workspace: str, agent: str, tool: str, outcome: str, rule: str) -> None:
    """A policy decision on one call (counts tool calls by decision)."""
    _span(
        "airlock.policy_decision",
        {**_run_attributes(workflow_id, workspace, agent), "airlock.tool": tool,
         "airlock.outcome": outcome, "airlock.rule": rule},
    )
    _metrics().tool_calls.add(
        1, {"workspace": workspace, "agent": agent, "tool": tool, "outcome": outcome, "rule": rule}
    )


def approval_resolved(
    *, workflow_id: str, workspace: str, agent: str, tool: str, outcome: str, waited_s: float
) -> None:
    """An approval wait ended: approved, denied or expired, after `waited_s` seconds."""
    _span(
        "airlock.approval_wait",
        {**_run_attributes(workflow_id, workspace, agent), "airlock.tool": tool,
         "airlock.outcome": outcome, "airlock.waited_s": waited_s},
        seconds_before=waited_s,
    )
    _metrics().approval_wait.record(waited_s, {"workspace": workspace, "tool": tool, "outcome": outcome})


def model_charged(
    *, workflow_id: str, workspace: str, agent: str, model: str, tokens: int, cost_usd: float
) -> None:
    """Tokens and USD charged to the run by one model call."""
    # The model call's span is the `model.decide` activity's own, which carries the same tokens
    # and cost; this hook only counts them.
    labels = {"workspace": workspace, "agent": agent, "model": model}
    instruments = _metrics()
    instruments.tokens.add(tokens, labels)
    instruments.cost_usd.add(cost_usd, labels)


def run_finished(
    *, workflow_id: str, workspace: str, agent: str, state: str, tokens: int, cost_usd: float
) -> None:
    """The run reached a final state."""
    # The run's span is the workflow's own (`RunWorkflow:AgentRun`, opened by temporalio's
    # OpenTelemetry plugin and ended when the run returns): it gets the run's attributes here.
    # Setting attributes records nothing by itself; the span is exported once, when it ends live.
    current = trace.get_current_span()
    if current.is_recording():
        current.set_attributes(
            {**_run_attributes(workflow_id, workspace, agent), "airlock.state": state,
             "airlock.tokens": tokens, "airlock.cost_usd": cost_usd}
        )
    _metrics().runs.add(1, {"workspace": workspace, "agent": agent, "state": state})
