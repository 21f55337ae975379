"""OpenTelemetry for the worker: a replay-safe tracer provider, a meter provider, their exporters,
and temporalio's OpenTelemetry plugin, which spans workflows and activities.

- Spans and metrics go over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (for example
  `http://otel-collector:4318`). The exporters read the standard `OTEL_EXPORTER_OTLP_*` variables
  themselves (per-signal endpoints, headers, timeout), and `OTEL_SERVICE_NAME` and
  `OTEL_RESOURCE_ATTRIBUTES` override the resource below.
- `AIRLOCK_TRACE_CONSOLE=1` also prints the spans.
- With neither, spans and metrics are recorded nowhere and cost next to nothing.

OpenTelemetry allows one global tracer provider per process, and the activities' tracers and
temporalio's workflow interceptor both use the global one, so `configure_telemetry()` installs
the providers once and returns the same `Telemetry` on every later call. A test that wants to see
the spans adds its own span processor to `Telemetry.tracer_provider`; one that wants the metrics
hands `use_meter_provider()` a meter provider of its own. `build_telemetry()` makes providers
without installing anything.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from temporalio.contrib.opentelemetry import (
    OpenTelemetryPlugin,
    ReplaySafeMeterProvider,
    ReplaySafeTracerProvider,
    create_tracer_provider,
)

from runtime.instruments import use_meter_provider

OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACE_CONSOLE = "AIRLOCK_TRACE_CONSOLE"


@dataclass(frozen=True)
class Telemetry:
    tracer_provider: ReplaySafeTracerProvider
    meter_provider: MeterProvider
    span_exporters: tuple[SpanExporter, ...]
    metric_readers: tuple[MetricReader, ...]

    def plugin(self) -> OpenTelemetryPlugin:
        """For `Client.connect(plugins=[...])`: spans for workflows (with their real duration),
        activities, signals, updates and queries, and the trace context carried between them."""
        return OpenTelemetryPlugin(add_temporal_spans=True)

    def flush(self, timeout_millis: int = 10_000) -> None:
        self.tracer_provider.force_flush(timeout_millis)
        self.meter_provider.force_flush(timeout_millis)


def _resource(service_name: str) -> Resource:
    # What the environment says (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) wins. Each worker
    # replica needs its own instance id, or their cumulative counters would overwrite each other
    # downstream.
    given = OTELResourceDetector().detect().attributes
    defaults = {SERVICE_NAME: service_name, SERVICE_INSTANCE_ID: f"{socket.gethostname()}:{os.getpid()}"}
    return Resource.create({k: v for k, v in defaults.items() if k not in given})


def build_telemetry(
    service_name: str = "airlock-worker",
    *,
    span_exporters: Sequence[SpanExporter] = (),
    metric_readers: Sequence[MetricReader] = (),
) -> Telemetry:
    """Providers with the exporters the environment asks for, plus any given; installs nothing."""
    exporters = list(span_exporters)
    readers = list(metric_readers)
    if os.environ.get(OTLP_ENDPOINT):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporters.append(OTLPSpanExporter())
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    if os.environ.get(TRACE_CONSOLE) == "1":
        exporters.append(ConsoleSpanExporter())
    resource = _resource(service_name)
    tracer_provider = create_tracer_provider(resource=resource)
    for exporter in exporters:
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    return Telemetry(tracer_provider, meter_provider, tuple(exporters), tuple(readers))


_lock = threading.RLock()
_installed: Telemetry | None = None


def configure_telemetry(service_name: str = "airlock-worker") -> Telemetry:
    """The process's telemetry: built from the environment and installed on the first call."""
    global _installed
    with _lock:
        if _installed is None:
            telemetry = build_telemetry(service_name)
            current = trace.get_tracer_provider()
            if not isinstance(current, trace.ProxyTracerProvider):
                raise RuntimeError(
                    f"an OpenTelemetry tracer provider ({type(current).__name__}) is already "
                    "installed; Airlock needs its replay-safe one, so let Airlock install it"
                )
            trace.set_tracer_provider(telemetry.tracer_provider)
            # For other libraries that record metrics through the global provider, from workflow
            # code or not. Airlock's own metrics are bound to it explicitly.
            metrics.set_meter_provider(ReplaySafeMeterProvider(telemetry.meter_provider))
            use_meter_provider(telemetry.meter_provider)
            _installed = telemetry
        return _installed


def flush_telemetry() -> None:
    """Exports what is still buffered, if this process installed telemetry."""
    with _lock:
        installed = _installed
    if installed is not None:
        installed.flush()
