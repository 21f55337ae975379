"""Airlock's own metric instruments, recorded from workflow code (`workflows.telemetry`).

The OpenTelemetry API only (no SDK, no exporter, no I/O), recorded through temporalio's
replay-safe meter provider: this module is safe to pass through the workflow sandbox, and is the
one plumbing module workflow code imports. `runtime.tracing` installs the providers.
"""

from __future__ import annotations

import threading

from opentelemetry import metrics
from temporalio.contrib.opentelemetry import ReplaySafeMeterProvider

SCOPE = "airlock"

# Approval waits run from seconds (an approver at the keyboard) to days (a tier's timeout).
APPROVAL_WAIT_BUCKETS_S = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200)

_lock = threading.RLock()


class RunMetrics:
    """Airlock's own metrics, recorded from workflow code (`workflows.telemetry`).

    Recordings go through `ReplaySafeMeterProvider`, which drops those made while a workflow
    replays history events, so each real event counts once.
    """

    def __init__(self, provider: metrics.MeterProvider) -> None:
        if not isinstance(provider, ReplaySafeMeterProvider):
            provider = ReplaySafeMeterProvider(provider)
        meter = provider.get_meter(SCOPE)
        self.runs = meter.create_counter("airlock.runs", unit="{run}", description="Runs that reached a final state.")
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
            "airlock.cost_usd", unit="{USD}", description="Model cost charged to runs, in US dollars."
        )


# Kept here, not in `workflows.telemetry`: the workflow sandbox loads its own copy of that module
# for every workflow, while this one is passed through, so there is one set per process.
_run_metrics: RunMetrics | None = None


def use_meter_provider(provider: metrics.MeterProvider | None) -> None:
    """Records Airlock's metrics through `provider` from now on; `None` means the global one.

    `configure_telemetry` binds the worker's provider; a test binds one with its own reader.
    """
    global _run_metrics
    with _lock:
        _run_metrics = None if provider is None else RunMetrics(provider)


def run_metrics() -> RunMetrics:
    global _run_metrics
    with _lock:
        if _run_metrics is None:
            # Until a provider is installed the global one is a proxy; instruments made from it
            # start recording once one is.
            _run_metrics = RunMetrics(metrics.get_meter_provider())
        return _run_metrics
