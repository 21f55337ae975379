"""Keeping what a run returns, answers and carries under Temporal's payload limit.

Temporal refuses a payload over 2 MB (`TMPRL1103 PayloadsTooLarge`): a report, a query answer or a
continue-as-new input over it fails the workflow task, and the task is retried forever, so the
stop button would never produce a report. Each entry a run records is bounded where it is made
(`workflows.entry`); these functions are the last line: they measure the whole and, only when it
is too large, leave out what matters least, saying how much they left out. The histories keep
everything (`airlock show` rebuilds it). Pure: no I/O, nothing awaits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from contracts.hashing import call_hash, canonical_json
from contracts.models import CallRecord, RunReport, TimelineEntry
from workflows.entry import bounded
from workflows.memory import RunMemory


def size(model: BaseModel) -> int:
    """Bytes of the model as Temporal's pydantic converter writes it (JSON)."""
    return len(model.__pydantic_serializer__.to_json(model))


def stripped(call: CallRecord) -> CallRecord:
    """The call without its arguments, result, facts and diff, which are named by hash instead;
    its tool, status, decision, votes, error (bounded) and compensation stay."""
    update: dict[str, Any] = {
        "args": {"args_sha256": call_hash(call.tool, call.args)},
        "facts": {},
        "diff": [],
        "error": bounded(call.error) if call.error else call.error,
    }
    if call.result is not None:
        update["result"] = {"result_bytes": len(canonical_json(call.result).encode())}
    return call.model_copy(update=update)


def fit_report(report: RunReport, limit: int) -> RunReport:
    """The report itself when it fits in `limit` bytes; otherwise one that does, with
    `summarised` counting what was left out."""
    if size(report) <= limit:
        return report
    for shrink in _REPORT_STEPS:
        report = shrink(report)
        if size(report) <= limit:
            return report
    return report


def _note(report: RunReport, field: str, count: int, **update: Any) -> RunReport:
    if count <= 0:
        return report
    summarised = {**report.summarised, field: report.summarised.get(field, 0) + count}
    return report.model_copy(update={**update, "summarised": summarised})


def _fewer_refused_votes(r: RunReport) -> RunReport:
    return _note(r, "refused_votes", len(r.refused_votes) - 20, refused_votes=r.refused_votes[:20])


def _fewer_costs(r: RunReport) -> RunReport:
    return _note(r, "cost_by_step", len(r.cost_by_step) - 200, cost_by_step=r.cost_by_step[-200:])


def _strip_calls(r: RunReport) -> RunReport:
    # The last calls keep their detail: they are what the run ended on.
    keep = 10
    old = r.calls[:-keep] if len(r.calls) > keep else []
    return _note(r, "calls_stripped", len(old), calls=[stripped(c) for c in old] + r.calls[len(old) :])


def _strip_changes(r: RunReport) -> RunReport:
    return _note(r, "changes_stripped", len(r.changes), changes=[stripped(c) for c in r.changes])


def _strip_all_calls(r: RunReport) -> RunReport:
    fresh = [c for c in r.calls if "args_sha256" not in c.args]
    return _note(r, "calls_stripped", len(fresh), calls=[stripped(c) for c in r.calls])


def _fewer_calls(r: RunReport) -> RunReport:
    if len(r.calls) <= 40:
        return r
    return _note(r, "calls", len(r.calls) - 40, calls=r.calls[:20] + r.calls[-20:])


def _fewer_changes(r: RunReport) -> RunReport:
    # `undo` is newest first and `changes` oldest first: the most recent are kept of both.
    return _note(
        _note(r, "changes", len(r.changes) - 50, changes=r.changes[-50:]),
        "undo",
        len(r.undo) - 50,
        undo=r.undo[:50],
    )


def _shorter_texts(r: RunReport) -> RunReport:
    answer = r.answer if r.answer is None or len(r.answer) <= 10_000 else bounded(r.answer, 10_000)
    reason = r.reason if r.reason is None or len(r.reason) <= 10_000 else bounded(r.reason, 10_000)
    return _note(r, "texts", int(answer != r.answer) + int(reason != r.reason), answer=answer, reason=reason)


def _bare(r: RunReport) -> RunReport:
    r = _note(r, "calls", len(r.calls), calls=[])
    r = _note(r, "changes", len(r.changes), changes=[])
    r = _note(r, "undo", len(r.undo), undo=[])
    r = _note(r, "refused_votes", len(r.refused_votes), refused_votes=[])
    return _note(r, "cost_by_step", len(r.cost_by_step), cost_by_step=[])


_REPORT_STEPS: list[Callable[[RunReport], RunReport]] = [
    _fewer_refused_votes,
    _fewer_costs,
    _strip_calls,
    _strip_changes,
    _strip_all_calls,
    _fewer_calls,
    _fewer_changes,
    _shorter_texts,
    _bare,
]


def fit_timeline(entries: list[TimelineEntry], limit: int) -> list[TimelineEntry]:
    """The timeline when it fits in `limit` bytes; otherwise its first entry and the newest that
    fit, the first entry saying how many were left out of this answer."""
    sizes = [size(e) + 1 for e in entries]
    if sum(sizes) <= limit or not entries:
        return entries
    budget = limit - sizes[0] - 200
    kept: list[TimelineEntry] = []
    for entry, n in zip(reversed(entries[1:]), reversed(sizes[1:]), strict=True):
        if n > budget:
            break
        budget -= n
        kept.append(entry)
    left_out = len(entries) - 1 - len(kept)
    note = f"{left_out} older entries are left out of this answer to fit the payload limit (airlock show has them)"
    first = entries[0].model_copy(update={"message": bounded(f"{entries[0].message or ''} [{note}]", 4000)})
    return [first, *reversed(kept)]


# What a checkpoint keeps of the conversation when it must shrink: the newest items within this.
TRANSCRIPT_BYTES = 64_000


def fit_checkpoint(checkpoint: RunMemory, limit: int) -> RunMemory | None:
    """The continue-as-new checkpoint when it fits in `limit` bytes; otherwise one that does,
    with less of the conversation and the earlier writes' results, facts and diffs left out
    (their compensations, which undo needs, stay); None when even that does not fit."""
    if checkpoint.last_error is not None and len(checkpoint.last_error) > 1000:
        checkpoint = checkpoint.model_copy(update={"last_error": bounded(checkpoint.last_error)})
    if size(checkpoint) <= limit:
        return checkpoint
    transcript, budget = [], TRANSCRIPT_BYTES
    for item in reversed(checkpoint.transcript):
        budget -= size(item)
        if budget < 0:
            break
        transcript.append(item)
    checkpoint = checkpoint.model_copy(update={"transcript": transcript[::-1]})
    if size(checkpoint) <= limit:
        return checkpoint
    lighter = [
        c.model_copy(
            update={
                "result": None if c.result is None else {"result_bytes": len(canonical_json(c.result).encode())},
                "facts": {},
            }
        )
        for c in checkpoint.carried_writes
    ]
    checkpoint = checkpoint.model_copy(update={"carried_writes": lighter})
    if size(checkpoint) <= limit:
        return checkpoint
    checkpoint = checkpoint.model_copy(update={"carried_writes": [c.model_copy(update={"diff": []}) for c in lighter]})
    return checkpoint if size(checkpoint) <= limit else None
