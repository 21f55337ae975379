"""Shared pieces: the dev server, workers, history sizes, percentiles, Airlock run inputs, tables."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from temporalio import activity
from temporalio.api.history.v1 import History
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.plugin import SimplePlugin
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor, WorkerConfig

from contracts import names

if TYPE_CHECKING:
    from runtime.settings import Settings
    from tools.runner import ToolRunner

ROOT = Path(__file__).resolve().parent.parent  # the repository: child processes run from here


def server_address(client: Client) -> str:
    return client.service_client.config.target_host


@asynccontextmanager
async def airlock_worker(client: Client, task_queue: str, **options: Any) -> AsyncIterator[Settings]:
    """`worker.build_worker` on a fresh back-office database, for the length of the block.

    `options` go to `build_worker` as they are. Imported late so that the peers' child processes,
    which use this module too, do not load Airlock's worker.
    """
    from runtime.settings import Settings
    from worker import build_worker

    with tempfile.TemporaryDirectory(prefix="airlock-bench-") as tmp:
        settings = Settings(db=f"{tmp}/backoffice.db", task_queue=task_queue)
        async with build_worker(client, settings, **options):
            yield settings


CONTROL_QUEUE = "bench-workspace-control"


@asynccontextmanager
async def control_worker(client: Client) -> AsyncIterator[Settings]:
    """One worker for the workspaces' control workflows, for the length of the block.

    They outlive each measurement's worker, and a run cannot join a control workflow left on a
    queue nobody polls any more: every Airlock worker of the bench points its runs at this one's
    queue instead, the worker processes it starts included (through the environment).
    """
    os.environ["AIRLOCK_CONTROL_TASK_QUEUE"] = CONTROL_QUEUE
    # The control store every worker of the bench shares, as the workers of a namespace do.
    store = tempfile.mkdtemp(prefix="airlock-bench-control-")
    os.environ["AIRLOCK_CONTROL_DB"] = f"{store}/control.db"
    try:
        async with airlock_worker(client, CONTROL_QUEUE) as settings:
            yield settings
    finally:
        del os.environ["AIRLOCK_CONTROL_TASK_QUEUE"]
        del os.environ["AIRLOCK_CONTROL_DB"]
        shutil.rmtree(store, ignore_errors=True)


def backoffice_runner(db: str) -> ToolRunner:
    """Airlock's back-office tools on the database at `db`, as `worker.build_worker` wires them,
    for workers that run the tools without Airlock around them."""
    from tools.backoffice.db import connect, create_schema
    from tools.registry import load_registry
    from tools.runner import ToolRunner

    engine = connect(db)
    create_schema(engine)
    return ToolRunner(load_registry(["tools.backoffice"]), engine)


# ---- history sizes ---------------------------------------------------------------------------


@dataclass
class HistorySize:
    events: int
    json_bytes: int
    proto_bytes: int
    by_type: dict[str, int] = field(default_factory=dict)
    proto_by_type: dict[str, int] = field(default_factory=dict)

    def __sub__(self, other: HistorySize) -> HistorySize:
        types = set(self.by_type) | set(other.by_type)
        return HistorySize(
            self.events - other.events,
            self.json_bytes - other.json_bytes,
            self.proto_bytes - other.proto_bytes,
            {t: self.by_type.get(t, 0) - other.by_type.get(t, 0) for t in types},
            {t: self.proto_by_type.get(t, 0) - other.proto_by_type.get(t, 0) for t in types},
        )

    def per(self, n: int) -> tuple[float, float, float]:
        return self.events / n, self.json_bytes / n, self.proto_bytes / n

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "json_bytes": self.json_bytes,
            "proto_bytes": self.proto_bytes,
            "by_type": self.by_type,
            "proto_by_type": self.proto_by_type,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> HistorySize:
        return HistorySize(
            d["events"], d["json_bytes"], d["proto_bytes"], dict(d.get("by_type", {})), dict(d.get("proto_by_type", {}))
        )

    @staticmethod
    def of(history: WorkflowHistory) -> HistorySize:
        """Events, bytes of `temporal workflow show --output json` style JSON, and protobuf bytes."""
        by_type: dict[str, int] = {}
        proto_by_type: dict[str, int] = {}
        for e in history.events:
            t = _short_type(e)
            by_type[t] = by_type.get(t, 0) + 1
            proto_by_type[t] = proto_by_type.get(t, 0) + e.ByteSize()
        return HistorySize(
            events=len(history.events),
            json_bytes=len(history.to_json().encode()),
            proto_bytes=History(events=list(history.events)).ByteSize(),
            by_type=by_type,
            proto_by_type=proto_by_type,
        )


def _short_type(event: Any) -> str:
    from temporalio.api.enums.v1 import EventType

    name = EventType.Name(event.event_type)
    return name.removeprefix("EVENT_TYPE_")


async def history_size(client: Client, workflow_id: str) -> HistorySize:
    return HistorySize.of(await client.get_workflow_handle(workflow_id).fetch_history())


# ---- statistics ------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


# ---- Airlock run inputs ----------------------------------------------------------------------

READ: dict[str, Any] = {"tool": "orders.get_order", "args": {"order_id": "ORD-1001"}}
# Approve mode: every write waits for a person (rule mode.approve); 10 USD stays within every
# limit of the shipped policy, so the only thing that gates it is the approval.
WRITE: dict[str, Any] = {
    "tool": "payments.create_refund",
    "args": {"order_id": "ORD-1002", "amount_usd": 10, "reason": "damaged"},
}
# Denied by rule refund.max-200 after the preview.
DENIED: dict[str, Any] = {
    "tool": "payments.create_refund",
    "args": {"order_id": "ORD-1002", "amount_usd": 500, "reason": "damaged"},
}
CALLS: dict[str, dict[str, Any]] = {"read": READ, "write": WRITE, "denied": DENIED}
# The three-call job every system is measured on: one read, one approved write, one denied call.
JOB = ["read", "write", "denied"]
APPROVER = "u_bob"


def plan_of(goal: str) -> list[str]:
    """`<prefix>:<kind>:<n>` -> the kinds of the calls to make, in order (`job`: the first n of JOB).

    The stand-in models, Airlock's and the peers', all read their plan from the goal this way."""
    _, kind, n = goal.split(":")
    return JOB[: int(n)] if kind == "job" else [kind] * int(n)


def kb_reads(count: int) -> list[dict[str, Any]]:
    """`count` allowed reads that all differ (a knowledge-base search each), for runs longer than
    the loop guard lets one call repeat."""
    return [{"tool": "kb.search", "args": {"query": f"refund policy {i}"}} for i in range(count)]


# The figures repeat one call N times on purpose. Airlock ends a run that proposes the same call
# more than `max_identical_calls` times (a loop guard, default 3); the bench raises it to the most
# it may be. The guard is checked in workflow code: it costs no event.
MAX_IDENTICAL_CALLS = 1000


def run_input(script: list[dict[str, Any]], *, steps_per_history: int = 200, **over: Any) -> dict[str, Any]:
    n = len(script) + 5
    base: dict[str, Any] = {
        "goal": "Refund order ORD-1002, it arrived damaged",
        "workspace": "acme",
        "requested_by": "u_alice",
        "agent": "support",
        "mode": "approve",
        "model": {"provider": "scripted", "script": script},
        "budget": {
            "max_steps": n,
            "max_tool_calls": n,
            "max_tokens": 50_000,
            "max_cost_usd": 1.0,
            "max_wall_clock_s": 86_400,
            "max_identical_calls": MAX_IDENTICAL_CALLS,
        },
        "steps_per_history": steps_per_history,
    }
    base.update(over)
    return base


async def sizes_by_kind(one: Callable[[str, int], Awaitable[HistorySize]], n: int) -> dict[str, Any]:
    """What every history figure compares, measured by `one(kind, calls)`: {kind: {"base", "n",
    "2n"}} for runs of 0, N and 2N reads, writes and denied calls, and {"job": {"size", "base"}}
    for the three-call job."""
    out: dict[str, Any] = {}
    base = await one("read", 0)
    for kind in ("read", "write", "denied"):
        sizes = [await one(kind, k) for k in (n, 2 * n)]
        out[kind] = {"base": base, "n": sizes[0], "2n": sizes[1]}
    out["job"] = {"size": await one("job", 3), "base": base}
    return out


async def count_waiting(client: Client, task_queue: str) -> int:
    """Runs on this queue waiting for approval, by visibility (which lags, never leads)."""
    query = f"TaskQueue = '{task_queue}' AND AirlockState = 'awaiting_approval'"
    return (await client.count_workflows(query)).count


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class RunStuck(RuntimeError):
    """A run whose workflow task keeps failing: Temporal retries it forever, so say so and stop."""


async def stuck_reason(handle: WorkflowHandle[Any, Any]) -> str | None:
    """Why the run's workflow task keeps failing, or None while it does not."""
    try:
        desc = await handle.describe()
    except Exception:
        return None
    pending = desc.raw_description.pending_workflow_task
    if pending.attempt < 2:
        return None
    reason = f"workflow task failing, attempt {pending.attempt}"
    try:
        # A handle from start_workflow has no run id: this is the newest run of a chain.
        async for event in handle.fetch_history_events():
            if event.HasField("workflow_task_failed_event_attributes"):
                failure = event.workflow_task_failed_event_attributes.failure
                reason += f": {failure.message}"[:400]
                break
            if event.HasField("workflow_task_timed_out_event_attributes"):
                reason += ": the worker never completed it (timed out)"
                break
    except Exception:
        pass
    if CORE_LOG.errors:
        reason += f"; worker said: {CORE_LOG.errors[-1]}"[:600]
    return reason


class CoreLogTap(logging.Handler):
    """Keeps the last error lines of the Temporal core (forwarded to Python logging by run.py):
    the reason a workflow task cannot be completed is logged there, not recorded in history."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.errors = [*self.errors[-9:], record.getMessage()[:500]]


CORE_LOG = CoreLogTap()


async def _watched(
    outcome: Awaitable[Any], watched: WorkflowHandle[Any, Any], timeout: float, poll: float, late: str
) -> Any:
    """Awaits `outcome`; every `poll` seconds until then, raises RunStuck if `watched`'s workflow
    task keeps failing, and TimeoutError(`late`) once `timeout` has passed."""
    task = asyncio.ensure_future(outcome)
    deadline = time.monotonic() + timeout
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll)
            if done:
                return task.result()
            reason = await stuck_reason(watched)
            if reason:
                raise RunStuck(f"{watched.id}: {reason}")
            if time.monotonic() > deadline:
                raise TimeoutError(late)
    finally:
        if not task.done():
            task.cancel()


async def result_or_stuck(handle: WorkflowHandle[Any, Any], timeout: float = 300.0) -> Any:
    """The run's result; raises RunStuck if its workflow task keeps failing, TimeoutError if late."""
    return await _watched(handle.result(), handle, timeout, 2.0, f"{handle.id}: no result within {timeout:.0f}s")


async def results_or_stuck(handles: Sequence[WorkflowHandle[Any, Any]], timeout: float = 600.0) -> list[Any]:
    """Results of many runs; the first one is watched for a failing workflow task (all run the same code)."""
    late = f"{len(handles)} runs: not all finished within {timeout:.0f}s"
    return await _watched(asyncio.gather(*(h.result() for h in handles)), handles[0], timeout, 3.0, late)


async def pending_approval(handle: WorkflowHandle[Any, Any], seen: set[str], timeout: float = 60.0) -> str:
    """The id of a pending approval not seen before.

    It waits on the server's view of the run (describe: its search attributes and whether a
    workflow task is pending), which does not involve the worker, and asks the `status` query
    only once the run is idle and waiting. A query that arrives while a workflow task is running
    local activities makes the worker complete that task early, which adds workflow-task events
    (3 per query) to the history being measured.
    """
    from contracts import names
    from contracts.models import Status
    from workflows.search_attributes import PENDING, STATE

    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + 2.0
    while True:
        try:
            desc = await handle.describe()
            attrs = desc.typed_search_attributes
            idle = not desc.raw_description.HasField("pending_workflow_task")
            if idle and attrs.get(STATE) == "awaiting_approval" and (attrs.get(PENDING) or 0) > 0:
                status = await handle.query(names.RunMessages.STATUS, result_type=Status)
                for p in status.pending_approvals:
                    if p.approval_id not in seen:
                        seen.add(p.approval_id)
                        return p.approval_id
        except Exception:  # not started yet
            pass
        if time.monotonic() > next_check:
            next_check = time.monotonic() + 2.0
            reason = await stuck_reason(handle)
            if reason:
                raise RunStuck(f"{handle.id}: {reason}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{handle.id}: no new pending approval within {timeout}s")
        await asyncio.sleep(0.01)


async def drive_approvals(handle: WorkflowHandle[Any, Any], count: int) -> None:
    """Approves `count` calls of a run as they come up."""
    seen: set[str] = set()
    for _ in range(count):
        approval_id = await pending_approval(handle, seen)
        await handle.signal(
            names.RunMessages.APPROVE, {"approval_id": approval_id, "approver": APPROVER, "comment": "ok"}
        )


# ---- worker settings -------------------------------------------------------------------------


class WorkerSettingsPlugin(SimplePlugin):
    """Sets worker options that `worker.build_worker` does not take, through a client plugin.

    Every worker built from a client carrying this plugin gets them: this is how a worker from
    `build_worker` gets another workflow cache size without changing `worker.py`.
    """

    def __init__(self, **settings: Any) -> None:
        super().__init__("airlock.bench.worker-settings")
        self.settings = settings

    def configure_worker(self, config: WorkerConfig) -> WorkerConfig:
        config = super().configure_worker(config)
        for key, value in self.settings.items():
            config[key] = value  # type: ignore[literal-required]
        return config


def with_worker_settings(client: Client, **settings: Any) -> Client:
    config = client.config()
    config["plugins"] = [*config.get("plugins", []), WorkerSettingsPlugin(**settings)]
    return Client(**config)


def refund_activity() -> str:
    """The write every approval figure times: from the vote to the worker starting this activity.
    Imported late: the peers' processes, which use this module too, do not load Airlock's activities."""
    from activities.tool_calls import execute_activity_name

    return execute_activity_name(WRITE["tool"])


class ToolStartTap(Interceptor):
    """Calls `on_start(workflow_id, step)` as the worker begins executing `activity_type`, before
    the activity itself runs: the end of an approval round trip, seen from the worker."""

    def __init__(self, activity_type: str, on_start: Callable[[str, int], object]) -> None:
        self.activity_type = activity_type
        self.on_start = on_start

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _TapInbound(next, self)


class _TapInbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, tap: ToolStartTap) -> None:
        super().__init__(next)
        self.tap = tap

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        if info.activity_type == self.tap.activity_type:
            step = getattr(input.args[0], "step", None) if input.args else None
            self.tap.on_start(info.workflow_id or "", int(step) if step is not None else -1)
        return await self.next.execute_activity(input)


# ---- output ----------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for j, row in enumerate(cells):
        lines.append("  ".join(c.rjust(widths[i]) if i else c.ljust(widths[i]) for i, c in enumerate(row)))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def section(title: str) -> str:
    return f"\n== {title} " + "=" * max(3, 96 - len(title))
