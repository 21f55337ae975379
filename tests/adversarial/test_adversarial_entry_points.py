"""Malformed messages and sizes, sent the way a namespace insider would: raw starts and raw
signals, updates and queries with any number of arguments in any encoding, unknown names, floods
and payloads near Temporal's 2 MB limit.

What every test checks against the real Temporal server: no workflow task ever fails (no
WORKFLOW_TASK_FAILED event, nothing retrying), what could not be used is refused and recorded,
nothing counts that should not (the run's state, its report, the back-office rows), and what the
run returns or answers stays under the payload limit. The last section checks the size bounds
themselves, without Temporal, at sizes too large to send (100,000 refusals, 3,000 large calls).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowQueryFailedError, WorkflowUpdateFailedError
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from contracts.models import (
    CallRecord,
    CallStatus,
    DecideResult,
    Mode,
    RefusedVote,
    RunReport,
    RunState,
    Status,
    TimelineEntry,
)
from contracts.validation import describe_validation_error
from runtime.settings import Settings
from tests.adversarial_support import (
    ENCODINGS,
    VOTE_REASONS,
    ScriptedOpenAI,
    assert_not_stuck,
    completion,
    event_types,
    outcome,
    raw,
    settle,
    timeline,
)
from tests.conftest import READ, REFUND_120, Runs, call, count_rows, run_input
from tools.backoffice.db import refunds
from worker import build_worker
from workflows.entry import REASON_KEYS, tally
from workflows.governed_run import MAX_CALLS_PER_STEP, REFUSALS_RECORDED, REFUSED_KEPT
from workflows.sizes import fit_report, fit_timeline, size

SERVER = settings(
    max_examples=20,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
LIMIT = 2 * 1024 * 1024  # Temporal's default payload limit
READABLE = ("json/plain", "binary/plain", "binary/null")  # what the data converter reads without a hint


# --- 1. starts ------------------------------------------------------------------------------------

start_args = st.lists(st.sampled_from(["input", "input", *ENCODINGS]), max_size=3)


def start_values(labels: list[str]) -> list[Any]:
    """The start arguments: a valid run input as JSON, or the same bytes under another encoding."""
    text = json.dumps(run_input(script=[READ])).encode()
    return [run_input(script=[READ]) if label == "input" else raw(label, text) for label in labels]


def expected_refusal(labels: list[str]) -> str | None:
    """The problem a start with these arguments must be refused with (a regex), or None when it
    must run: one readable input, or two whose second is null (no carried state)."""
    if len(labels) in (0, 3):
        return rf"^invalid run input: AgentRun takes one argument .*, got {len(labels)}$"
    first = labels[0]
    if first not in ("input", "json/plain", "binary/plain", "binary/null"):
        return r"^invalid run input: malformed payload: a payload of \d+ bytes with encoding .+ could not be read"
    if first == "binary/plain":
        return r"^invalid run input: \d+ bytes of binary data; expected a JSON object$"
    if len(labels) == 2 and labels[1] != "binary/null":
        return r"^invalid carried state \(argument 2\): malformed payload: "
    if first == "binary/null":
        return r"^invalid run input: \(arguments\): "
    return None


@SERVER
@given(labels=start_args)
async def test_a_start_with_any_arity_or_encoding_runs_or_fails_at_once_naming_the_problem(
    client: Client, runs: Runs, labels: list[str]
) -> None:
    """Whatever number of start arguments (0 to 3) in whatever encoding (JSON, bytes, null,
    protobuf of an unknown type, an unknown encoding, bytes that are not JSON): the run either
    runs to completion (exactly one readable input) or fails at once, non-retryably, with
    InvalidRunInput naming the problem (how many arguments, which encoding, which field); no
    workflow task fails."""
    handle = await client.start_workflow(
        "AgentRun",
        args=start_values(labels),
        id=f"start-{uuid.uuid4().hex[:10]}",
        task_queue=runs.settings.task_queue,
        result_type=RunReport,
    )
    result = await outcome(handle)
    expected = expected_refusal(labels)
    event(f"{'refused' if expected else 'runs'}: {len(labels)} argument(s)")
    if expected is None:
        assert isinstance(result, RunReport) and result.state is RunState.COMPLETED, result
    else:
        assert isinstance(result, ApplicationError), result
        assert result.type == "InvalidRunInput" and re.search(expected, result.message), (labels, result.message)
        assert len(result.message) <= 1200
    await assert_not_stuck(client, handle)


async def test_an_oversized_run_input_fails_at_once_naming_its_size(client: Client, runs: Runs) -> None:
    """A run input over 1.4 MB (here a 1.5 MB script), which might no longer fit a continue-as-new
    checkpoint beside the run's state, fails at once with its size and the limit."""
    script = [{"tool": "kb.search", "args": {"query": "x" * 12_000}} for _ in range(125)]
    handle = await runs.start_raw(run_input(script=script))
    result = await outcome(handle)
    assert isinstance(result, ApplicationError) and result.type == "InvalidRunInput"
    assert re.fullmatch(r"invalid run input: \d+ bytes; the limit is 1400000", result.message), result.message
    await assert_not_stuck(client, handle)


async def test_an_undo_run_started_with_the_wrong_arguments_fails_at_once(client: Client, runs: Runs) -> None:
    """UndoRun started with no argument, two, or one in an unknown encoding fails at once with
    InvalidRunInput naming the problem, instead of retrying its first workflow task."""
    cases: list[tuple[list[Any], str]] = [
        ([], r"UndoRun takes one argument \(the run input\), got 0"),
        ([{"run_id": "run-x"}, {"run_id": "run-y"}], r"UndoRun takes one argument \(the run input\), got 2"),
        ([raw("unknown")], r"encoding 'application/x-bogus' could not be read"),
    ]
    for n, (args, message) in enumerate(cases):
        handle = await client.start_workflow(
            "UndoRun", args=args, id=f"undo-bad-{n}-{uuid.uuid4().hex[:8]}", task_queue=runs.settings.task_queue
        )
        result = await outcome(handle)
        assert isinstance(result, ApplicationError) and result.type == "InvalidRunInput", result
        assert re.search(message, result.message), result.message
        await assert_not_stuck(client, handle)


# --- 2. signals, updates and queries ------------------------------------------------------------

VOTES = ["approve", "deny", "decide"]
MISNAMED = ["aprove", "Approve", "approve ", "approval", "vote"]
NAMES = [*VOTES, *MISNAMED, "pause", "resume", "workspace_switch"]
messages = st.lists(
    st.tuples(st.sampled_from(NAMES), st.lists(st.sampled_from(list(ENCODINGS)), max_size=3)), min_size=1, max_size=10
)


# One dollar: the examples of a property share the back office, and ORD-1001 refunds 180 USD in all.
SMALL_REFUND = call("payments.create_refund", order_id="ORD-1001", amount_usd=1, reason="damaged")


def readable_single(labels: list[str]) -> bool:
    return len(labels) == 1 and labels[0] in READABLE


@SERVER
@given(sent=messages)
async def test_raw_messages_of_any_arity_encoding_or_name_are_refused_and_recorded(
    client: Client, runs: Runs, db: Engine, sent: list[tuple[str, list[str]]]
) -> None:
    """A run waiting for approval gets signals and `decide` updates with 0 to 3 arguments in any
    encoding, under its own names and misspelled ones: none counts, every vote-like one is a
    refused vote with a reason (a misspelled name is named in it), every pause/resume is a refused
    entry, every update is answered with a refusal; the call still waits, and one proper approval
    then runs it, once. No workflow task fails."""
    handle = await runs.start(mode="approve", script=[SMALL_REFUND])
    status = await settle(runs, handle)
    approval_id = status.pending_approvals[0].approval_id
    votes = pauses = switch_refusals = updates = 0
    for name, labels in sent:
        args = [raw(label) for label in labels]
        if name == "decide":
            updates += 1
            votes += 1
            answer = await asyncio.wait_for(handle.execute_update("decide", args=args, result_type=DecideResult), 10)
            assert not answer.accepted and answer.reason and VOTE_REASONS.match(answer.reason), answer
            continue
        await handle.signal(name, args=args)
        votes += name not in ("pause", "resume", "workspace_switch")
        pauses += name in ("pause", "resume")
        switch_refusals += name == "workspace_switch" and not readable_single(labels)

    status = await runs.wait_for(handle, lambda s: s.refused_messages >= votes + pauses + switch_refusals)
    assert status.state is RunState.AWAITING_APPROVAL and status.pending_approvals[0].approvals_still_needed == 1
    # Queries answer whatever arguments they are sent; an unknown one says which it is.
    assert (
        await handle.query("status", args=[raw("unknown"), raw("binary/null")], result_type=Status)
    ).state is status.state
    with pytest.raises(WorkflowQueryFailedError, match="unknown query 'statu'"):
        await handle.query("statu")
    # An unknown update is rejected before it is accepted: it leaves no event.
    with pytest.raises((WorkflowUpdateFailedError, RPCError)):
        await handle.execute_update("decied", {"approval_id": approval_id, "approver": "u_bob", "decision": "approve"})
    entries = await timeline(handle)
    for name in {n for n, _ in sent if n in MISNAMED}:
        assert any(e.kind == "approval_refused" and repr(name) in (e.message or "") for e in entries), name

    await handle.signal("approve", {"approval_id": approval_id, "approver": "u_bob"})
    report: RunReport = await asyncio.wait_for(handle.result(), 15)
    event(f"{votes} votes, {pauses} pauses, {switch_refusals} switch refusals")
    assert report.state is RunState.COMPLETED
    assert [c.status for c in report.calls] == [CallStatus.EXECUTED]
    assert [v.approver for v in report.calls[0].votes] == ["u_bob"]
    assert len(report.refused_votes) == votes and report.refused_messages == votes + pauses + switch_refusals
    assert all(VOTE_REASONS.match(r.reason) and len(r.payload or "") <= 1000 for r in report.refused_votes)
    for name, _ in sent:
        if name in MISNAMED:
            assert any(repr(name) in r.reason for r in report.refused_votes), name
    assert count_rows(db, refunds, refunds.c.created_by == handle.id) == 1
    types = await event_types(client, handle)
    assert types.count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED) == updates
    await assert_not_stuck(client, handle)


async def test_a_misspelled_approve_in_a_flood_of_refused_votes_is_seen_and_counts_nothing(
    client: Client, runs: Runs, db: Engine
) -> None:
    """An approver sends a well-formed vote under the name `aprove`, then a flood of 600 malformed
    votes arrives: the misspelled one is in the timeline, the refused votes and `status` (named,
    last error), and counts nothing; of the flood, the first refusals are kept in full and the
    rest only counted by reason, so the run's record stays bounded; a proper approval then runs
    the call, once, and the report counts every refusal."""
    handle = await runs.start(mode="approve", script=[REFUND_120])
    approval_id = (await settle(runs, handle)).pending_approvals[0].approval_id
    await handle.signal("aprove", {"approval_id": approval_id, "approver": "u_bob"})
    status = await runs.wait_for(handle, lambda s: s.refused_messages == 1)
    assert status.last_error and "unknown signal 'aprove': nothing was counted" in status.last_error
    assert status.pending_approvals[0].approvals_still_needed == 1
    assert status.refused_by_reason == {"unknown signal": 1}

    flood = 600
    for start in range(0, flood, 100):
        await asyncio.gather(
            *(handle.signal("approve", args=[raw("unknown")] * (i % 3)) for i in range(start, start + 100))
        )
    status = await runs.wait_for(handle, lambda s: s.refused_messages == flood + 1, timeout=60)
    assert sum(status.refused_by_reason.values()) == flood + 1 and len(status.refused_by_reason) <= REASON_KEYS + 1
    entries = await timeline(handle)
    refused_entries = [e for e in entries if e.kind == "approval_refused"]
    assert len(refused_entries) == REFUSALS_RECORDED + 1 and refused_entries[-1].outcome == "summarised"
    assert "'aprove'" in (refused_entries[0].message or "")

    await handle.signal("approve", {"approval_id": approval_id, "approver": "u_bob"})
    report: RunReport = await asyncio.wait_for(handle.result(), 30)
    assert report.state is RunState.COMPLETED and [v.approver for v in report.calls[0].votes] == ["u_bob"]
    assert len(report.refused_votes) == REFUSED_KEPT and report.refused_messages == flood + 1
    assert report.refused_votes[0].approver == "u_bob" and "'aprove'" in report.refused_votes[0].reason
    assert count_rows(db, refunds, refunds.c.created_by == handle.id) == 1
    assert size(report) < 200_000
    await assert_not_stuck(client, handle)


async def test_payloads_near_the_limit_are_refused_with_bounded_reasons(client: Client, runs: Runs, db: Engine) -> None:
    """A 1.9 MB approval id, a vote with 5,000 unknown fields nested three deep, a 1.9 MB signal of
    an unknown name and a 1.9 MB pause: each is refused with a reason and a kept payload of at most
    1,000 characters (the validation error names the first problems and how many more there were);
    the queries' answers stay small; the run then completes on a proper approval."""
    handle = await runs.start(mode="approve", script=[REFUND_120])
    approval_id = (await settle(runs, handle)).pending_approvals[0].approval_id
    huge = "x" * 1_900_000
    await handle.signal("approve", {"approval_id": huge, "approver": "u_bob"})
    nested = {"approval_id": approval_id, "approver": "u_bob", "extra": {"a": {"b": {f"k{i}": i for i in range(5000)}}}}
    answer = await handle.execute_update(
        "decide", {**nested["extra"], **{f"f{i}": i for i in range(5000)}}, result_type=DecideResult
    )
    assert not answer.accepted and answer.reason and len(answer.reason) <= 1000
    assert re.search(r"; and \d+ more problem\(s\)$", answer.reason), answer.reason
    await handle.signal("approvee", huge)
    await handle.signal("pause", {"by": huge})
    status = await runs.wait_for(handle, lambda s: s.refused_messages == 4)
    assert size(status) < 100_000 and status.state is RunState.AWAITING_APPROVAL
    entries = await timeline(handle)
    assert sum(size(e) for e in entries) < 100_000
    refused = [e for e in entries if e.outcome == "refused" or e.kind == "approval_refused"]
    assert [e.kind for e in refused] == ["approval_refused", "approval_refused", "approval_refused", "paused"]
    assert all(len(e.message or "") <= 1100 for e in refused)

    await handle.signal("approve", {"approval_id": approval_id, "approver": "u_bob"})
    report: RunReport = await asyncio.wait_for(handle.result(), 15)
    # The 7.6 MB of signals made Temporal suggest a continue-as-new before the call ran: the
    # report is the last history's, with its own (empty) record of refusals.
    assert report.state is RunState.COMPLETED and report.runs_in_chain == 2
    assert size(report) < 100_000
    assert count_rows(db, refunds, refunds.c.created_by == handle.id) == 1
    await assert_not_stuck(client, handle)


async def test_a_model_proposing_ten_thousand_invalid_calls_is_bounded(client: Client, settings: Settings) -> None:
    """A model (openai provider) answers one turn with 10,000 calls of a tool that does not exist,
    one with a 5,000-character name, and a 1 MB final answer: the run considers the first 32 calls
    (each refused as invalid, the long name cut short), tells the model the rest were not
    considered, records how many, and ends with a report well under the payload limit."""
    calls = [(f"c{i}", "shell__exec", {"cmd": f"rm -rf /{i}"}) for i in range(10_000)]
    calls[1] = ("c1", "y" * 5000, {})

    def respond(index: int, body: dict[str, Any]) -> dict[str, Any]:
        return completion(tool_calls=calls) if index == 0 else completion(content="z" * 1_000_000)

    model = ScriptedOpenAI(respond)
    async with build_worker(client, settings, openai=model.provider(settings)):
        runs = Runs(client, settings)
        budget = {"max_steps": 5, "max_tool_calls": 20_000, "max_tokens": 1_000_000, "max_cost_usd": 100}
        handle = await runs.start(mode="auto", model={"provider": "openai", "name": "gpt-4o-mini"}, budget=budget)
        report: RunReport = await asyncio.wait_for(handle.result(), 60)
        entries = await timeline(handle)
        await assert_not_stuck(client, handle)

    assert report.state is RunState.COMPLETED
    assert len(report.calls) == MAX_CALLS_PER_STEP and all(c.status is CallStatus.INVALID for c in report.calls)
    assert len(report.calls[1].tool) == 200 and "the tool name has 5000 characters" in (report.calls[1].error or "")
    model_calls = [e for e in entries if e.kind == "model_call"]
    assert model_calls[0].data["proposals_refused"] == 10_000 - MAX_CALLS_PER_STEP
    notes = [m["content"] for m in model.requests[1]["messages"] if m["role"] == "user"]
    assert any(f"{10_000 - MAX_CALLS_PER_STEP} further calls" in n for n in notes), notes
    assert report.answer is not None and len(report.answer) == 64_000
    assert size(report) < 300_000


# --- 3. the bounds themselves (pure) ------------------------------------------------------------


def test_a_hundred_thousand_refusals_are_counted_in_a_bounded_number_of_kinds() -> None:
    """100,000 refusals with 100,000 different reasons (ids, names) are all counted, in at most
    REASON_KEYS kinds plus "other"."""
    counts: dict[str, int] = {}
    for i in range(100_000):
        tally(
            counts,
            f"unknown approval id 'apr-{i}'"
            if i % 2
            else f"person{i} lacks the role this tier needs (one of: approver)",
        )
    assert sum(counts.values()) == 100_000 and len(counts) <= REASON_KEYS + 1
    assert counts["unknown approval id"] == 50_000


class _Deep(BaseModel):
    items: list[dict[str, int]]


def test_a_validation_error_on_a_huge_nested_input_is_one_bounded_line() -> None:
    """A validation error with 100,000 problems, at locations with 10,000-character keys, is
    described in at most 1,000 characters: the first problems, each naming where it is, and how
    many more there were."""
    with pytest.raises(ValidationError) as error:
        _Deep.model_validate({"items": [{"k" * 10_000: "not a number"} for _ in range(100_000)]})
    text = describe_validation_error(error.value)
    assert len(text) <= 1000
    assert text.startswith("items.0.kkkk") and re.search(r"; and 99990 more problem\(s\)$|…$", text), text[-80:]


def _call(i: int, args_bytes: int) -> CallRecord:
    return CallRecord(
        step=i,
        index=0,
        tool="kb.search",
        args={"query": "q" * args_bytes},
        status=CallStatus.INVALID,
        error="e" * 5000,
        result={"r": "x" * 2000},
    )


def _report(calls: int, args_bytes: int, refused: int = 0) -> RunReport:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    return RunReport(
        workflow_id="w",
        state=RunState.STOPPED,
        workspace="acme",
        agent="support",
        requested_by="u_alice",
        mode=Mode.AUTO,
        model="scripted",
        policy_hash="h",
        started_at=now,
        finished_at=now,
        calls=[_call(i, args_bytes) for i in range(calls)],
        changes=[_call(i, args_bytes) for i in range(calls // 2)],
        used={},
        limits={},
        refused_votes=[RefusedVote(at=now, approval_id=None, approver=None, reason="r" * 1000, payload="p" * 1000)]
        * refused,
    )


@settings(max_examples=15, deadline=None, database=None)
@given(calls=st.integers(0, 3000), args_bytes=st.sampled_from([10, 1000, 32_000]), refused=st.integers(0, 2000))
def test_a_report_of_any_size_fits_the_payload_limit_and_says_what_it_left_out(
    calls: int, args_bytes: int, refused: int
) -> None:
    """However many calls (up to 3,000, with up to 32 KB of arguments each) and refused votes a
    report holds, the fitted report is under 1.5 MB; a report that fits is returned unchanged, and
    one that did not says in `summarised` what it left out."""
    report = _report(calls, args_bytes, refused)
    fitted = fit_report(report, 1_500_000)
    assert size(fitted) <= 1_500_000 < LIMIT
    if size(report) <= 1_500_000:
        assert fitted is report
    else:
        assert fitted.summarised and all(n > 0 for n in fitted.summarised.values())
        assert len(fitted.calls) + fitted.summarised.get("calls", 0) == calls


def test_a_timeline_answer_too_large_keeps_its_start_and_newest_entries() -> None:
    """A timeline of 20,000 entries of 1 KB is answered with its first entry, saying how many
    were left out, and the newest entries that fit under the limit."""
    now = datetime(2026, 12, 1, tzinfo=UTC)
    entries = [
        TimelineEntry(at=now, step=i, kind="run_started" if i == 0 else "proposal", message="m" * 1000)
        for i in range(20_000)
    ]
    answer = fit_timeline(entries, 1_500_000)
    assert sum(size(e) + 1 for e in answer) <= 1_500_000
    assert answer[0].step == 0 and answer[-1].step == 19_999
    assert f"{20_000 - len(answer)} older entries are left out" in (answer[0].message or "")


def test_a_raw_value_is_shown_by_encoding_and_size_without_being_read() -> None:
    """A kept payload of 1.9 MB under an unknown encoding is shown in at most 1,000 characters,
    naming its size and encoding."""
    from workflows.entry import bounded_json

    shown = bounded_json(raw("unknown", b"x" * 1_900_000))
    assert len(shown) <= 1000 and shown.startswith("<a payload of 1900000 bytes with encoding 'application/x-bogus'>")
    assert isinstance(raw("unknown"), RawValue)
