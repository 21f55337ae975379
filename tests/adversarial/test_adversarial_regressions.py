"""Regressions for what the adversarial suites found: each test names the behaviour that once
failed (a stuck workflow task, an exception where a named error belongs, a lost pause or vote)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from temporalio.client import Client

from contracts.models import DecideResult, Effect, Mode, RunReport, RunState, Tier
from policy import CallContext, PolicyError, decide, parse_policy
from runtime.exits import StartupError
from runtime.settings import EXAMPLE_POLICY, Settings
from tests.adversarial_support import assert_not_stuck
from tests.conftest import Runs, call, count_rows, run_input
from tools.backoffice.db import refunds
from worker import build_worker

TEXT = EXAMPLE_POLICY.read_text()


# --- F1: decide() raises decimal.InvalidOperation on a NaN-like string ---------------------------

NAN_RULE = (
    TEXT
    + """
  tickets.create_ticket:
    rules:
      - id: ticket.numeric
        effect: require_approval
        when: {arg: subject, gt: 10}
"""
)


@pytest.mark.parametrize("value", ["NaN", "sNaN", "-nan"])
def test_a_nan_argument_matches_a_numeric_rule_so_the_call_fails_closed(value: str) -> None:
    """A value that is not a comparable number must count as matching (fail closed), not raise."""
    policy = parse_policy(NAN_RULE)
    ctx = CallContext(
        workspace="acme",
        agent="support",
        requested_by="u_alice",
        mode=Mode.AUTO,
        tool="tickets.create_ticket",
        effect=Effect.WRITE,
        tier=Tier.LOW,
        args={"subject": value},
    )
    assert decide(policy, ctx).rule == "ticket.numeric"


async def test_a_run_given_a_nan_argument_waits_for_approval(
    client: Client, settings: Settings, tmp_path: Path, runs: Runs
) -> None:
    """End to end: the call the numeric rule catches waits for a person, and the run's workflow
    task never fails (it once failed forever). A worker now refuses that rule in its policy file
    (a number compared with a string field), so the run brings it as its own rule."""
    policy = tmp_path / "p.yaml"
    policy.write_text(NAN_RULE)
    with pytest.raises(
        StartupError, match=re.escape("rule ticket.numeric: arg subject is a string, and gt compares a number")
    ):
        build_worker(client, settings.model_copy(update={"policy_path": policy}))
    rule = {"id": "ticket.numeric", "tool": "tickets.create_ticket", "effect": "require_approval"}
    handle = await runs.start(
        rules=[{**rule, "when": {"arg": "subject", "gt": 10}}],
        script=[call("tickets.create_ticket", subject="NaN")],
    )
    try:
        status = await runs.wait_for(handle, lambda s: bool(s.pending_approvals))
        assert status.state is RunState.AWAITING_APPROVAL
        assert status.pending_approvals[0].tool == "tickets.create_ticket"
        await assert_not_stuck(client, handle)
    finally:
        with contextlib.suppress(Exception):
            await handle.terminate()


# --- F2: the policy loader lets non-PolicyError exceptions escape --------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "? [a, b]\n: c\n",  # TypeError: unhashable key (loader._duplicate_keys)
        "people:\n  ? {a: 1}\n  : {roles: []}\n",  # TypeError, same place
        "version: !!python/name:os.system\n",  # yaml ConstructorError (yaml.safe_load)
        "version: !!int abc\n",  # ValueError without file:line
        "version: !!timestamp nope\n",  # AttributeError
        "<<: 5\nversion: 1\n",  # yaml ConstructorError
        "x: " + "[" * 1200 + "]" * 1200 + "\n",  # RecursionError (yaml.compose)
    ],
    ids=["seq-key", "map-key", "python-tag", "bad-int", "bad-timestamp", "bad-merge", "deep-nesting"],
)
def test_the_policy_loader_names_the_line_of_any_malformed_yaml(text: str) -> None:
    """Whatever YAML construct breaks it, the loader raises `PolicyError` naming file and line."""
    with pytest.raises(PolicyError) as error:
        parse_policy(text, "p.yaml")
    assert str(error.value).startswith("p.yaml:")


@settings(max_examples=300, deadline=None, database=None)
@given(
    at=st.integers(0, len(TEXT)),
    token=st.sampled_from(["!!int x", "!!python/object:os.system", "? [a]\n: ", "<<: 1\n", "!!timestamp x"]),
)
def test_tags_and_complex_keys_anywhere_in_a_policy_give_a_policy_error_or_a_policy(at: int, token: str) -> None:
    """Any other exception escaping the loader fails this property."""
    try:
        policy = parse_policy(TEXT[:at] + token + TEXT[at:], "example.yaml")
    except PolicyError as e:
        assert str(e).startswith("example.yaml")
    else:
        assert policy.version >= 1


# --- F3: an infinite budget is accepted, and the report/status become unreadable ---------------------


async def test_an_infinite_budget_is_refused_naming_the_field(runs: Runs) -> None:
    """`--input '{..., "budget": {"max_cost_usd": 1e999}}'` from the CLI gives inf. It should be
    refused (`budget.max_cost_usd: ...`); it once ran with no USD limit and a report no typed client
    could decode."""
    from temporalio.client import WorkflowFailureError

    handle = await runs.start_raw({**run_input(), "budget": {"max_cost_usd": float("inf")}})
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), 10)
    assert "budget.max_cost_usd: Input should be a finite number" in str(failure.value.cause)


# --- F4: payloads over Temporal's 2 MB limit wedge the run --------------------------------------------


async def test_huge_refused_votes_are_kept_bounded_and_the_run_completes(runs: Runs, db: Engine) -> None:
    """Two ~1.1 MB refused votes are kept as bounded text, so the report stays under Temporal's
    2 MB limit: the approved refund runs once and the run completes (stored whole, they once made
    the SDK fail the completing workflow task, TMPRL1103)."""
    handle = await runs.start(
        mode="approve", script=[call("payments.create_refund", order_id="ORD-1001", amount_usd=120, reason="d")]
    )
    pending = (await runs.pending(handle)).pending_approvals[0]
    for _ in range(2):
        await handle.signal(
            "approve", {"approval_id": pending.approval_id, "approver": "u_mallory", "comment": "z" * 1_100_000}
        )
    await handle.signal("approve", {"approval_id": pending.approval_id, "approver": "u_bob"})
    try:
        report = await asyncio.wait_for(handle.result(), 10)
        assert report.state is RunState.COMPLETED
        assert len(report.refused_votes) == 2
        assert all(v.reason.startswith("malformed payload") for v in report.refused_votes), report.refused_votes[
            0
        ].reason
        assert all(len(v.payload or "") < 10_000 for v in report.refused_votes)
        assert count_rows(db, refunds) == 1
    finally:
        await assert_not_stuck(runs.client, handle)
        with contextlib.suppress(Exception):
            await handle.terminate()


async def test_a_megabyte_of_suggestions_checkpoints_by_size_and_completes(runs: Runs) -> None:
    """60 suggested emails of 19 KB (a 1.1 MB input, once a report over 2 MB): the run checkpoints
    by size, completes, and its report fits Temporal's payload limit."""
    script = [call("email.send", to="dana@example.com", subject=f"d{i}", body="y" * 19_000) for i in range(60)]
    handle = await runs.start(mode="suggest", script=script, budget={"max_steps": 100, "max_tool_calls": 100})
    try:
        report = await asyncio.wait_for(handle.result(), 10)
        assert report.state is RunState.COMPLETED
        assert len(report.model_dump_json()) < 2_000_000
    finally:
        await assert_not_stuck(runs.client, handle)
        with contextlib.suppress(Exception):
            await handle.terminate()


# --- F5: a pause that arrives before the run's first task is dropped ----------------------------------


async def test_a_pause_sent_with_start_holds_the_run_before_its_first_call(
    runs: Runs, client: Client, db: Engine
) -> None:
    """signal-with-start `pause`: the run is paused before its first tool call (a pause that
    arrived before the run had started was once dropped, and the refund executed)."""
    handle = await client.start_workflow(
        "AgentRun",
        run_input(script=[call("payments.create_refund", order_id="ORD-1001", amount_usd=20, reason="x")]),
        id=f"pause-{uuid.uuid4().hex[:8]}",
        task_queue=runs.settings.task_queue,
        result_type=RunReport,
        start_signal="pause",
        start_signal_args=[{"by": "u_ops", "reason": "freeze"}],
    )
    status = await runs.wait_for(handle, lambda s: s.state in (RunState.PAUSED, RunState.COMPLETED))
    executed = count_rows(db, refunds)
    with contextlib.suppress(Exception):
        await handle.terminate()
    assert status.state is RunState.PAUSED and executed == 0, (status.state, executed)


# --- F6: a counted vote on a call still pending when the run stops is missing from the report ---------


async def test_the_votes_on_a_call_still_pending_are_in_the_report_of_a_stopped_run(
    client: Client, settings: Settings, critical_policy: Path
) -> None:
    """The first of two critical-tier votes is in the report of a run stopped before the second."""
    settings = settings.model_copy(update={"policy_path": critical_policy})
    async with build_worker(client, settings):
        runs = Runs(client, settings)
        handle = await runs.start(script=[call("crm.update_customer", customer_id="C-100", changes={"phone": "1"})])
        pending = (await runs.pending(handle)).pending_approvals[0]
        vote = {"approval_id": pending.approval_id, "approver": "u_bob", "decision": "approve", "comment": "fine by me"}
        assert (await handle.execute_update("decide", vote, result_type=DecideResult)).accepted
        await handle.cancel()
        report = await handle.result()
    assert [(v.approver, v.comment) for v in report.calls[0].votes] == [("u_bob", "fine by me")]


# --- F7 the call that trips the loop detector once had no error -------------


async def test_the_loop_detector_names_the_call_it_stopped(runs: Runs) -> None:
    """The call that trips the loop detector says why it did not run."""
    handle = await runs.start(script=[call("orders.get_order", order_id="ORD-1001")] * 5)
    report = await handle.result()
    assert report.state is RunState.BUDGET_EXHAUSTED
    last = report.calls[-1]
    assert last.error, (last.status, last.error)
