"""`airlock show`: a run's flight record, readable in a terminal, or as JSON for machines.

It answers four questions in order: what happened (the timeline), who approved it, what changed
(field-level diffs), how to undo it, and what it cost.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from contracts.models import CallRecord, CallStatus, Effect, Hold, PendingApproval, StepCost, TimelineEntry
from policy.limits import counter_text
from recorder.flight_recorder import Recording
from workflows.holds import at


class Approval(BaseModel):
    approval_id: str | None
    tool: str
    step: int
    outcome: str
    approvers: list[str]
    at: list[str]
    # What each approver wrote with their vote, in the order of `approvers`.
    comments: list[str] = Field(default_factory=list)


class Change(BaseModel):
    step: int
    tool: str
    idempotency_key: str | None
    diff: list[dict[str, Any]]


class Undo(BaseModel):
    step: int
    tool: str
    compensation: str | None
    args: dict[str, Any] = Field(default_factory=dict)
    note: str = ""


class Cost(BaseModel):
    by_step: list[StepCost]
    tokens: int
    usd: float


class FlightRecord(BaseModel):
    """`airlock show --json`: the four answers, plus the raw timeline and calls."""

    workflow_id: str
    state: str
    closed: bool
    workspace: str
    agent: str
    requested_by: str
    goal: str
    mode: str
    model: str
    policy_hash: str
    # The run's own scope, when its input narrowed its agent's capabilities or added rules.
    capabilities: list[str] | None = None
    run_rules: list[str] = Field(default_factory=list)
    # An open run: what holds it, and the calls waiting for votes (as `status` answers).
    held: Hold | None = None
    pending_approvals: list[PendingApproval] = Field(default_factory=list)
    who_approved: list[Approval]
    what_changed: list[Change]
    how_to_undo: list[Undo]
    what_it_cost: Cost
    undone_by: list[str]
    calls: list[CallRecord]
    timeline: list[TimelineEntry]


def flight_record(rec: Recording) -> FlightRecord:
    m = rec.memory
    executed_writes = [c for c in m.calls if c.status is CallStatus.EXECUTED and c.effect is not Effect.READ]
    spec = m.input.model
    return FlightRecord(
        workflow_id=rec.workflow_id,
        state=rec.state.value,
        closed=rec.closed,
        workspace=m.input.workspace,
        agent=m.input.agent,
        requested_by=m.input.requested_by,
        goal=m.input.goal,
        mode=m.mode.value,
        model=spec.provider if not spec.name else f"{spec.provider}:{spec.name}",
        policy_hash=m.context.policy_hash,
        capabilities=m.input.capabilities,
        run_rules=[f"run.{r.id} ({r.effect} {r.tool})" for r in m.input.rules],
        held=rec.held,
        pending_approvals=rec.pending_approvals,
        who_approved=[
            Approval(
                approval_id=c.approval_id,
                tool=c.tool,
                step=c.step,
                outcome=_approval_outcome(c, rec),
                approvers=[f"{v.approver} ({v.decision}{', signed' if v.signature else ''})" for v in c.votes],
                at=[v.at.isoformat() for v in c.votes],
                comments=[v.comment for v in c.votes],
            )
            for c in m.calls
            if c.approval_id
        ],
        what_changed=[
            Change(
                step=c.step,
                tool=c.tool,
                idempotency_key=c.idempotency_key,
                diff=[d.model_dump(mode="json") for d in c.diff],
            )
            for c in executed_writes
        ],
        how_to_undo=[
            Undo(
                step=c.step,
                tool=c.tool,
                compensation=c.compensation.tool if c.compensation else None,
                args=c.compensation.args if c.compensation else {},
                note=c.compensation.note if c.compensation else "",
            )
            for c in reversed(executed_writes)
        ],
        what_it_cost=Cost(by_step=m.cost_by_step, tokens=m.used.tokens, usd=m.used.cost_usd),
        undone_by=rec.undone_by,
        calls=m.calls,
        timeline=m.timeline,
    )


def _approval_outcome(call: CallRecord, rec: Recording) -> str:
    """A call's approval as it stands: a call approved but not yet run (held by safe mode, say)
    is not "awaiting approval"."""
    if call.status is not CallStatus.AWAITING_APPROVAL:
        return call.status.value
    if any(p.approval_id == call.approval_id for p in rec.pending_approvals):
        return "awaiting_approval"
    if rec.held is not None:
        return f"approved, not run yet: held by {rec.held.kind.replace('_', ' ')}"
    return "approved, not run yet"


def _counted(call: CallRecord, held: bool) -> str:
    """Where a call's charge stands: counted (it ran), still held, or never counted (released)."""
    if not held:
        return "not counted"
    return "counted" if call.status is CallStatus.EXECUTED else "held"


def _vote(shown: str, comment: str) -> str:
    return f"{shown}: {json.dumps(comment, ensure_ascii=False)}" if comment else shown


def _value(v: Any) -> str:
    return json.dumps(v) if not isinstance(v, str) else v


def _line(e: TimelineEntry) -> str:
    parts = [e.at.strftime("%H:%M:%S"), f"step {e.step:<3}", f"{e.kind:<18}"]
    if e.tool:
        parts.append(e.tool + (f"#{e.call_index}" if e.call_index is not None else ""))
    if e.approval_id:
        parts.append(e.approval_id)
    if e.actor:
        parts.append(f"by {e.actor}")
    if e.outcome:
        parts.append(f"→ {e.outcome}")
    if e.rule:
        parts.append(f"[rule {e.rule}]")
    if e.message:
        parts.append(f"— {e.message}")
    return "  ".join(parts)


def _held_lines(hold: Hold | None) -> list[str]:
    if hold is None:
        return []
    lines = [f"  held since {at(hold.since)}: {hold.waiting_for}", f"  released by: {hold.released_by}"]
    return lines


def render(record: FlightRecord) -> str:
    out = [
        f"Run {record.workflow_id}: {record.state}{'' if record.closed else ' (still open)'}",
        *_held_lines(record.held),
        f"  goal: {record.goal}",
        f"  workspace {record.workspace}, agent {record.agent}, requested by "
        f"{record.requested_by}, mode {record.mode}, model {record.model}",
        f"  policy {record.policy_hash}",
        *([f"  scope: only {', '.join(record.capabilities) or 'no tool'}"] if record.capabilities is not None else []),
        *([f"  run rules: {', '.join(record.run_rules)}"] if record.run_rules else []),
        "",
        "Timeline",
    ]
    out += ["  " + _line(e) for e in record.timeline]
    out += ["", "Who approved"]
    out += [
        f"  step {a.step} {a.tool} ({a.approval_id}): {a.outcome}; votes: "
        + (", ".join(_vote(v, c) for v, c in zip(a.approvers, a.comments, strict=True)) or "none")
        for a in record.who_approved
    ] or ["  nothing needed approval"]
    for p in record.pending_approvals:
        out.append(
            f"  {p.approval_id} waits for {p.approvals_still_needed} more of {' or '.join(p.approver_roles)} "
            f"by {at(p.deadline)}" + (f" — {p.rule}: {p.reason}" if p.reason and p.reason != p.rule else "")
        )
    limited = [(c, counter) for c in record.calls for counter in c.limits]
    if limited:
        out += ["", "Windowed limits"]
        out += [f"  step {c.step} {c.tool}#{c.index}: {counter_text(n)} ({_counted(c, n.held)})" for c, n in limited]
    out += ["", "What changed"]
    for c in record.what_changed:
        out.append(f"  step {c.step} {c.tool}  key {c.idempotency_key}")
        out += [f"    {d['field']}: {_value(d['before'])} → {_value(d['after'])}" for d in c.diff]
    if not record.what_changed:
        out.append("  nothing")
    out += ["", "How to undo (newest first)"]
    out += [
        f"  step {u.step} {u.tool}: "
        + (f"{u.compensation} {json.dumps(u.args)}" if u.compensation else "cannot be undone")
        + (f" — {u.note}" if u.note else "")
        for u in record.how_to_undo
    ] or ["  nothing to undo"]
    if record.undone_by:
        out.append(f"  undone by: {', '.join(record.undone_by)}")
    out += ["", "What it cost"]
    out += [
        f"  step {s.step}: {s.prompt_tokens + s.completion_tokens} tokens, {s.cost_usd:.6f} USD ({s.model})"
        for s in record.what_it_cost.by_step
        if s.prompt_tokens or s.completion_tokens or s.cost_usd
    ]
    out.append(f"  total: {record.what_it_cost.tokens} tokens, {record.what_it_cost.usd:.6f} USD")
    return "\n".join(out)
