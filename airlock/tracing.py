"""OpenTelemetry: a tracer provider for the worker, and the Temporal interceptor that spans
workflows and activities. Spans go to the console exporter only when asked
(`AIRLOCK_TRACE_CONSOLE=1`); with no exporter configured they cost next to nothing."""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from temporalio.contrib.opentelemetry import TracingInterceptor


def configure_tracing(service_name: str = "airlock-worker") -> TracingInterceptor:
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        if os.environ.get("AIRLOCK_TRACE_CONSOLE") == "1":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        trace.set_tracer_provider(provider)
    return TracingInterceptor()
