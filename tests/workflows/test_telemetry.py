"""OpenTelemetry: a run's trace and Airlock's metrics, recorded once per real event even when a
worker replays the workflow, and exported over OTLP when the environment asks for it.

The global tracer provider can be set only once per process, and the activities' tracers use it,
so these tests install the worker's own telemetry (`configure_telemetry`) and add an in-memory
span exporter to it. Metrics are read through a meter provider of each test's own.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import pytest_asyncio
import yaml
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    Replayer,
    Worker,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from contracts.model_io import ModelDecision, ModelRequest, ProposedCall
from contracts.models import CallStatus, RunReport, RunState
from runtime.converter import data_converter
from runtime.instruments import RunMetrics, use_meter_provider
from runtime.settings import Settings
from runtime.tracing import Telemetry, build_telemetry, configure_telemetry
from tests.conftest import READ, REFUND_120, Runs, call
from worker import build_worker
from workflows.agent_run import AgentRun

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = sorted((Path(__file__).resolve().parents[1] / "histories").glob("*.json"))

BAD_EMAIL = call("email.send", to="x@evil.test", subject="s", body="b")


class PricedModel:
    """Stands in for a paid model: one proposal per step, each step charged tokens and dollars."""

    STEPS: ClassVar[list[tuple[dict[str, Any] | None, int, int, float]]] = [
        (READ, 100, 20, 0.0012),
        (REFUND_120, 200, 30, 0.0025),  # needs approval (refund.over-50-approval)
        (BAD_EMAIL, 50, 10, 0.0005),  # denied (email.allowed-domains)
        (None, 40, 5, 0.0003),  # the answer
    ]
    TOKENS = sum(p + c for _, p, c, _ in STEPS)
    COST_USD = sum(usd for *_, usd in STEPS)

    async def decide(self, request: ModelRequest) -> ModelDecision:
        proposal, prompt, completion, usd = self.STEPS[request.step - 1]
        calls = [] if proposal is None else [ProposedCall(call_id=f"c{request.step}", **proposal)]
        return ModelDecision(
            calls=calls,
            answer=None if calls else "refunded",
            model="priced-1",
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=usd,
        )


class SeesReplays(Interceptor):
    """Notes, each time a worker builds the workflow, whether it started by replaying history."""

    def __init__(self) -> None:
        self.replaying: list[bool] = []

    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput) -> type[WorkflowInboundInterceptor]:
        seen = self.replaying

        class Inbound(WorkflowInboundInterceptor):
            async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
                seen.append(workflow.unsafe.is_replaying())
                return await super().execute_workflow(input)

        return Inbound


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed() -> Telemetry:
    return configure_telemetry()


@pytest.fixture(scope="module")
def span_store(installed: Telemetry) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    installed.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()  # later test modules' spans are not kept


@pytest.fixture
def spans(span_store: InMemorySpanExporter) -> InMemorySpanExporter:
    span_store.clear()
    return span_store


@pytest.fixture
def metric_reader(installed: Telemetry) -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    use_meter_provider(provider)
    yield reader
    use_meter_provider(installed.meter_provider)
    provider.shutdown()


@pytest.fixture
def traced(client: Client, installed: Telemetry) -> Client:
    """The test server's client with the telemetry plugin, as `worker.connect_client` makes it."""
    return Client(**{**client.config(), "plugins": [installed.plugin()]})


@pytest_asyncio.fixture(loop_scope="session")
async def traced_worker(traced: Client, settings: Settings) -> AsyncIterator[Worker]:
    w = build_worker(traced, settings, openai=PricedModel())
    async with w:
        yield w


def uncached_worker(client: Client, settings: Settings, **options: Any) -> Worker:
    """The worker `build_worker` makes, except that it keeps no workflow in its cache: every
    workflow task rebuilds the run by replaying its history from the start."""
    template = build_worker(client, settings, task_queue=f"{settings.task_queue}-template", **options)
    return Worker(**{**template.config(), "task_queue": settings.task_queue, "max_cached_workflows": 0})


# ---- helpers ----------------------------------------------------------------------------------


async def priced_run(runs: Runs) -> tuple[WorkflowHandle[Any, RunReport], RunReport]:
    """Reads an order, has a refund approved, is refused an email, answers; four priced steps."""
    handle = await runs.start(mode="auto", model={"provider": "openai", "name": "priced-1"})
    approval = (await runs.pending(handle)).pending_approvals[0].approval_id
    await handle.signal("approve", {"approval_id": approval, "approver": "u_bob", "comment": "ok"})
    report = await asyncio.wait_for(handle.result(), timeout=60)
    assert report.state is RunState.COMPLETED
    assert [c.status for c in report.calls] == [CallStatus.EXECUTED, CallStatus.EXECUTED, CallStatus.DENIED]
    return handle, report


async def trace_of(spans: InMemorySpanExporter, run_id: str) -> list[ReadableSpan]:
    """Every span in the trace of the run's workflow span, once that span has ended."""
    for _ in range(100):
        runs = [
            s
            for s in spans.get_finished_spans()
            if s.name == "RunWorkflow:AgentRun" and s.attributes.get("airlock.run_id") == run_id
        ]
        if runs:
            trace_id = runs[0].context.trace_id
            return [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no workflow span for {run_id}")


def named(trace: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in trace if s.name == name]


def points(reader: InMemoryMetricReader) -> dict[str, dict[frozenset[tuple[str, Any]], Any]]:
    """Each metric's data points by attributes: a counter's value, a histogram's (count, sum)."""
    out: dict[str, dict[frozenset[tuple[str, Any]], Any]] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for p in metric.data.data_points:
                    value = (p.count, p.sum) if hasattr(p, "count") else p.value
                    out.setdefault(metric.name, {})[frozenset(p.attributes.items())] = value
    return out


def labels(**attributes: Any) -> frozenset[tuple[str, Any]]:
    return frozenset(attributes.items())


# ---- a run's trace and metrics ----------------------------------------------------------------


async def test_a_run_has_one_trace_with_each_span_once_although_every_task_replays(
    traced: Client, settings: Settings, spans: InMemorySpanExporter, metric_reader: InMemoryMetricReader
) -> None:
    """On a worker that caches no workflow (each workflow task replays the run from its start),
    a run still yields one trace: the run (workflow) span, a span per model call, policy decision,
    approval wait and tool call, each exactly once and with the run id, workspace, tool and cost."""
    replays = SeesReplays()
    async with uncached_worker(traced, settings, openai=PricedModel(), extra_interceptors=[replays]):
        handle, report = await priced_run(Runs(traced, settings))
    # The worker really did rebuild the run from its history, many times.
    assert replays.replaying[0] is False and len(replays.replaying) >= 5 and all(replays.replaying[1:])

    trace = await trace_of(spans, handle.id)
    run_span = named(trace, "RunWorkflow:AgentRun")
    assert len(run_span) == 1
    assert {k: v for k, v in run_span[0].attributes.items() if k.startswith("airlock.")} == {
        "airlock.run_id": handle.id,
        "airlock.workspace": "acme",
        "airlock.agent": "support",
        "airlock.state": "completed",
        "airlock.tokens": PricedModel.TOKENS,
        "airlock.cost_usd": pytest.approx(PricedModel.COST_USD),
    }

    # Every span of the run descends from the run's span.
    by_id = {s.context.span_id: s for s in trace}
    for span in trace:
        node = span
        while node.parent is not None and node.parent.span_id in by_id:
            node = by_id[node.parent.span_id]
        assert node is run_span[0] or node.name == "StartWorkflow:AgentRun", span.name

    # Each activity ran, and was traced, exactly once.
    tool_spans = Counter(s.name for s in trace if s.name.startswith("tool."))
    assert tool_spans == {
        "tool.orders.get_order.prepare": 1,
        "tool.orders.get_order": 1,
        "tool.payments.create_refund.prepare": 2,  # for the approver, then again just before it ran
        "tool.payments.create_refund": 1,
        "tool.email.send.prepare": 1,  # previewed, then denied: never executed
    }
    activity_spans = Counter(s.name for s in trace if s.name.startswith("RunActivity:"))
    assert activity_spans == {
        "RunActivity:run.start": 1,
        "RunActivity:model.decide": 4,
        **{f"RunActivity:{name}": count for name, count in tool_spans.items()},
    }
    for span in named(trace, "tool.payments.create_refund") + named(trace, "tool.orders.get_order"):
        assert span.attributes["airlock.run_id"] == handle.id
        assert span.attributes["airlock.workspace"] == "acme"
        assert span.attributes["airlock.tool"] == span.name.removeprefix("tool.")

    models = sorted(named(trace, "model.decide"), key=lambda s: s.attributes["airlock.step"])
    assert [(s.attributes["airlock.step"], s.attributes["airlock.cost_usd"]) for s in models] == [
        (step + 1, usd) for step, (*_, usd) in enumerate(PricedModel.STEPS)
    ]
    assert all(s.attributes["airlock.run_id"] == handle.id for s in models)

    decisions = named(trace, "airlock.policy_decision")
    assert sorted(
        (s.attributes["airlock.tool"], s.attributes["airlock.outcome"], s.attributes["airlock.rule"]) for s in decisions
    ) == [
        ("email.send", "deny", "email.allowed-domains"),
        ("orders.get_order", "allow", "agent.capabilities"),
        ("payments.create_refund", "needs_approval", "refund.over-50-approval"),
    ]
    for span in decisions:
        assert span.attributes["airlock.run_id"] == handle.id and span.attributes["airlock.workspace"] == "acme"

    (wait,) = named(trace, "airlock.approval_wait")
    waited_s = wait.attributes["airlock.waited_s"]
    assert wait.attributes["airlock.tool"] == "payments.create_refund"
    assert wait.attributes["airlock.outcome"] == "approved"
    assert waited_s > 0
    assert (wait.end_time - wait.start_time) == pytest.approx(waited_s * 1e9, abs=1_000)

    # And the metrics counted each real event once.
    run = dict(workspace="acme", agent="support")
    assert points(metric_reader) == {
        "airlock.runs": {labels(**run, state="completed"): 1},
        "airlock.tool_calls": {
            labels(**run, tool="orders.get_order", outcome="allow", rule="agent.capabilities"): 1,
            labels(**run, tool="payments.create_refund", outcome="needs_approval", rule="refund.over-50-approval"): 1,
            labels(**run, tool="email.send", outcome="deny", rule="email.allowed-domains"): 1,
        },
        "airlock.approval_wait": {
            labels(workspace="acme", tool="payments.create_refund", outcome="approved"): (1, pytest.approx(waited_s))
        },
        "airlock.tokens": {labels(**run, model="priced-1"): PricedModel.TOKENS},
        "airlock.cost_usd": {labels(**run, model="priced-1"): pytest.approx(PricedModel.COST_USD)},
    }
    assert report.used.tokens == PricedModel.TOKENS


async def test_replaying_a_finished_run_exports_nothing(
    traced: Client,
    settings: Settings,
    traced_worker: Worker,
    installed: Telemetry,
    spans: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
) -> None:
    """Replaying a run's whole history with the same telemetry (as a new worker would) runs all of
    its workflow code again, yet exports no span and records no metric a second time."""
    handle, _ = await priced_run(Runs(traced, settings))
    trace = await trace_of(spans, handle.id)
    assert named(trace, "airlock.approval_wait") and named(trace, "airlock.policy_decision")
    assert points(metric_reader)["airlock.runs"]

    history = await handle.fetch_history()
    spans.clear()
    before = points(metric_reader)
    replays = SeesReplays()
    replayer = Replayer(
        workflows=[AgentRun],
        data_converter=data_converter,
        plugins=[installed.plugin()],
        interceptors=[replays],
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None
    assert replays.replaying == [True]
    assert spans.get_finished_spans() == ()
    assert points(metric_reader) == before


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
async def test_committed_histories_replay_with_telemetry_on_and_export_nothing(
    path: Path, installed: Telemetry, spans: InMemorySpanExporter, metric_reader: InMemoryMetricReader
) -> None:
    """Runs recorded before telemetry existed still replay under the telemetry plugin, and their
    replay records nothing."""
    from tests.replay.test_replay import WORKFLOWS, load, started

    history = load(path.read_text(), path.stem)
    workflow_class = WORKFLOWS[started(history).workflow_type.name]
    replayer = Replayer(workflows=[workflow_class], data_converter=data_converter, plugins=[installed.plugin()])
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
    assert spans.get_finished_spans() == ()
    assert points(metric_reader) == {}


# ---- export -----------------------------------------------------------------------------------


class Receiver(BaseHTTPRequestHandler):
    """A stand-in OTLP/HTTP endpoint on loopback: keeps each request's path and body."""

    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def otlp_endpoint() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    received: list[tuple[str, str, bytes]] = []
    handler = type("Handler", (Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def test_otlp_export_sends_spans_and_metrics_to_the_configured_endpoint(
    monkeypatch: pytest.MonkeyPatch, otlp_endpoint: tuple[str, list[tuple[str, str, bytes]]]
) -> None:
    """With OTEL_EXPORTER_OTLP_ENDPOINT set, spans and Airlock's metrics are posted as OTLP
    protobuf to its /v1/traces and /v1/metrics, under the worker's service name."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    endpoint, received = otlp_endpoint
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    for name in (
        "AIRLOCK_TRACE_CONSOLE",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    telemetry = build_telemetry("airlock-worker")
    try:
        tracer = telemetry.tracer_provider.get_tracer("test")
        tracer.start_span("probe", attributes={"airlock.run_id": "run-1"}).end()
        RunMetrics(telemetry.meter_provider).runs.add(1, {"workspace": "acme", "agent": "support", "state": "done"})
        telemetry.flush()
    finally:
        telemetry.tracer_provider.shutdown()
        telemetry.meter_provider.shutdown()

    traces = [ExportTraceServiceRequest.FromString(b) for p, _, b in received if p == "/v1/traces"]
    metrics = [ExportMetricsServiceRequest.FromString(b) for p, _, b in received if p == "/v1/metrics"]
    assert {ctype for _, ctype, _ in received} == {"application/x-protobuf"}

    def strings(attributes: Any) -> dict[str, str]:
        return {a.key: a.value.string_value for a in attributes}

    exported_spans = [
        (s.name, strings(s.attributes), strings(r.resource.attributes)["service.name"])
        for t in traces
        for r in t.resource_spans
        for ss in r.scope_spans
        for s in ss.spans
    ]
    assert exported_spans == [("probe", {"airlock.run_id": "run-1"}, "airlock-worker")]
    exported_metrics = {
        m.name for t in metrics for r in t.resource_metrics for sm in r.scope_metrics for m in sm.metrics
    }
    assert "airlock.runs" in exported_metrics


def test_without_an_endpoint_nothing_is_exported_and_console_is_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OTEL_EXPORTER_OTLP_ENDPOINT means no exporter at all; AIRLOCK_TRACE_CONSOLE=1 adds a
    console span exporter, and only that."""
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("AIRLOCK_TRACE_CONSOLE", raising=False)
    quiet = build_telemetry()
    assert quiet.span_exporters == () and quiet.metric_readers == ()
    monkeypatch.setenv("AIRLOCK_TRACE_CONSOLE", "1")
    console = build_telemetry()
    assert [type(e) for e in console.span_exporters] == [ConsoleSpanExporter] and console.metric_readers == ()
    for telemetry in (quiet, console):
        telemetry.tracer_provider.shutdown()
        telemetry.meter_provider.shutdown()


def test_configure_telemetry_installs_once_per_process(installed: Telemetry) -> None:
    """A second call (the CLI reconnecting, say) returns the installed telemetry instead of adding
    exporters or fighting over the global providers."""
    from opentelemetry import trace

    assert configure_telemetry() is installed
    assert trace.get_tracer_provider() is installed.tracer_provider


# ---- the compose file -------------------------------------------------------------------------


def test_compose_workers_export_to_a_collector_that_forwards_traces_to_jaeger() -> None:
    """In docker-compose.temporal.yml the workers' OTLP endpoint is the collector's OTLP/HTTP
    receiver, whose traces pipeline exports to the Jaeger service's OTLP port, and the Jaeger UI
    is published."""
    compose = yaml.safe_load((ROOT / "docker-compose.temporal.yml").read_text())
    services = compose["services"]
    endpoint = services["worker"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert endpoint == "http://otel-collector:4318"

    collector = services["otel-collector"]
    (mount,) = collector["configs"]
    assert mount["target"] == "/etc/otelcol/config.yaml"
    config_file = ROOT / compose["configs"][mount["source"]]["file"]
    config = yaml.safe_load(config_file.read_text())
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"
    pipelines = config["service"]["pipelines"]
    assert pipelines["traces"]["receivers"] == ["otlp"] and pipelines["metrics"]["receivers"] == ["otlp"]
    (to_jaeger,) = pipelines["traces"]["exporters"]
    assert to_jaeger.split("/")[0] == "otlp_grpc"
    assert config["exporters"][to_jaeger]["endpoint"] == "jaeger:4317"
    for name in pipelines["traces"]["exporters"] + pipelines["metrics"]["exporters"]:
        assert name in config["exporters"], name

    assert services["jaeger"]["image"].startswith("jaegertracing/jaeger:2.")
    assert "127.0.0.1:16686:16686" in services["jaeger"]["ports"]
