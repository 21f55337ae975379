"""Audit events: one JSON line per thing that happened in a run, ready for a SIEM.

The same builder serves the worker's live structlog stream (workflow code calls `events_for` on
every timeline entry it records) and `airlock audit export`, which rebuilds runs from their
histories; so what a SIEM received live and what an export says later are the same lines.
The published schema is `docs/audit-event.schema.json` (generated from `AuditEvent`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, JsonValue

from contracts.hashing import call_hash
from contracts.models import CallRecord, Effect, FieldChange, TimelineEntry

SCHEMA: Literal["airlock.audit.v1"] = "airlock.audit.v1"

EventType = Literal[
    "run_started",
    "model_call",
    "model_retry",
    "proposal",
    "proposal_rejected",
    "decision",
    "approval_requested",
    "approval",
    "approval_refused",
    "approval_escalated",
    "approval_resolved",
    "tool_call",
    "side_effect",
    "run_paused",
    "run_resumed",
    "run_continued",
    "circuit_open",
    "workspace_switch",
    "run_finished",
]

_TYPES: dict[str, EventType] = {
    "run_started": "run_started",
    "model_call": "model_call",
    "model_retry": "model_retry",
    "proposal": "proposal",
    "invalid_call": "proposal_rejected",
    "decision": "decision",
    "approval_requested": "approval_requested",
    "approval_vote": "approval",
    "approval_refused": "approval_refused",
    "approval_escalated": "approval_escalated",
    "approval_resolved": "approval_resolved",
    "tool_result": "tool_call",
    "tool_error": "tool_call",
    "paused": "run_paused",
    "resumed": "run_resumed",
    "continued_as_new": "run_continued",
    "circuit_open": "circuit_open",
    "workspace_switch": "workspace_switch",
    "run_finished": "run_finished",
}


class Correlation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow_id: str
    call_id: str | None = None
    approval_id: str | None = None


class AuditEvent(BaseModel):
    """One audit line. Field names are a contract with whoever ingests them: add, never rename."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal["airlock.audit.v1"] = SCHEMA
    event_id: str
    type: EventType
    at: datetime
    run_id: str
    workspace: str
    agent: str
    requested_by: str
    policy_hash: str
    step: int
    call_index: int | None = None
    tool: str | None = None
    actor: str | None = None
    rule: str | None = None
    outcome: str | None = None
    message: str | None = None
    idempotency_key: str | None = None
    args_hash: str | None = None
    diff: list[FieldChange] | None = None
    tokens: int | None = None
    cost_usd: float | None = None
    # What an approver wrote with their vote (a deny's reason), as they wrote it.
    comment: str | None = None
    correlation: Correlation


class RunFacts(BaseModel):
    """What every event of a run repeats, so that each line stands on its own."""

    run_id: str
    workspace: str
    agent: str
    requested_by: str
    policy_hash: str


def events_for(seq: int, entry: TimelineEntry, run: RunFacts, calls: list[CallRecord]) -> list[AuditEvent]:
    call = next(
        (c for c in reversed(calls) if c.step == entry.step and c.index == entry.call_index),
        None,
    )
    call_id = f"{run.run_id}/s{entry.step}/c{entry.call_index}" if entry.call_index is not None else None
    data = entry.data if isinstance(entry.data, dict) else {}
    base = dict(
        at=entry.at,
        **run.model_dump(),
        step=entry.step,
        call_index=entry.call_index,
        tool=entry.tool,
        actor=entry.actor,
        rule=entry.rule,
        outcome=entry.outcome,
        message=entry.message,
        correlation=Correlation(workflow_id=run.run_id, call_id=call_id, approval_id=entry.approval_id),
    )
    kind = _TYPES[entry.kind]
    extra: dict[str, JsonValue] = {}
    if kind == "model_call":
        extra = {"tokens": data.get("tokens"), "cost_usd": data.get("cost_usd")}
    if kind == "approval" and isinstance(data.get("comment"), str):
        extra["comment"] = data["comment"]
    if kind in ("proposal", "tool_call") and call is not None and entry.tool:
        extra["args_hash"] = call_hash(entry.tool, call.args)
        extra["idempotency_key"] = call.idempotency_key if kind == "tool_call" else None
    events = [AuditEvent(event_id=f"{run.run_id}:{seq}", type=kind, **base, **extra)]
    if (
        entry.kind == "tool_result"
        and call is not None
        and call.effect is not Effect.READ
        # Deduplicated too: after a crash lost the task of the first execution, the answer from
        # the ledger is the only record this run's history has of a write that did happen.
        and entry.outcome in ("executed", "deduplicated")
    ):
        events.append(
            AuditEvent(
                event_id=f"{run.run_id}:{seq}.effect",
                type="side_effect",
                **base,
                idempotency_key=call.idempotency_key,
                args_hash=call_hash(call.tool, call.args),
                diff=call.diff,
            )
        )
    return events
