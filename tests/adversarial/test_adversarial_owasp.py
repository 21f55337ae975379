"""One scenario or more for each threat on the list in docs/threats.md: OWASP Top 10 for LLM
applications LLM06 (excessive agency; LLM01 is in test_adversarial_injection.py) and the OWASP
agentic threats: tool misuse, privilege compromise, resource overload, overwhelming the human in
the loop, repudiation and identity spoofing.

Each test shows the mechanism Airlock relies on today, and no more. Where that mechanism leaves a
gap (an approver's name is not signed), the test shows what is recorded and docs/threats.md names
the residual risk.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from contracts.models import CallStatus, DecideResult, RunState
from policy import load_policy
from runtime.converter import data_converter
from runtime.settings import EXAMPLE_POLICY, Settings
from tests.adversarial_support import VOTE_REASONS, assert_not_stuck, settle, timeline
from tests.conftest import REFUND_120, Runs, call, count_rows, policy_file, run_input
from tools.backoffice.db import customers, emails, refunds, tickets
from worker import build_worker


async def client_as(client: Client, identity: str) -> Client:
    """A second client on the same namespace that presents another identity to Temporal."""
    return await Client.connect(
        client.service_client.config.target_host,
        namespace=client.namespace,
        data_converter=data_converter,
        identity=identity,
    )


async def signal_identities(client: Client, workflow_id: str) -> list[tuple[str, str]]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return [
        (
            e.workflow_execution_signaled_event_attributes.signal_name,
            e.workflow_execution_signaled_event_attributes.identity,
        )
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    ]


# --- LLM06 excessive agency --------------------------------------------------------------------------


async def test_llm06_a_workspace_caps_autonomy_and_capabilities_cap_reach(runs: Runs, db: Engine) -> None:
    """A run in the `sandbox` workspace asks for `auto` and gets `suggest`: every write the agent
    proposes is recorded as a suggestion and none runs. A tool outside the agent's capabilities
    is denied by the capability list, not merely suggested."""
    handle = await runs.start(
        workspace="sandbox",
        mode="auto",
        script=[
            call("payments.create_refund", order_id="ORD-1001", amount_usd=20, reason="damaged"),
            call("crm.update_customer", customer_id="C-100", changes={"email": "attacker@evil.test"}),
            call("payments.void_refund", refund_id="RF-0000000000"),
        ],
    )
    report = await handle.result()
    assert report.mode.value == "suggest"
    assert [(c.status, c.decision.rule) for c in report.calls] == [
        (CallStatus.SUGGESTED, "mode.suggest"),
        (CallStatus.SUGGESTED, "mode.suggest"),
        (CallStatus.DENIED, "agent.capabilities"),
    ]
    assert report.changes == [] and count_rows(db, refunds, refunds.c.created_by == handle.id) == 0


async def test_llm06_unattended_writes_in_auto_mode_stay_inside_the_rules_and_can_be_undone(
    runs: Runs, db: Engine
) -> None:
    """What `auto` mode lets through without a person is exactly what the rules allow, and no
    more: five refunds of 46-50 USD (each under the 50 USD approval threshold) on a 180 USD
    order run three times (147 USD) and are then denied by `refund.within-refundable`, from the
    previewed fact. Every executed write is in `changes` with its diff and in `undo`, newest
    first. (That the per-call limit is not a total limit is a residual risk in
    docs/threats.md.)"""
    script = [
        call("payments.create_refund", order_id="ORD-1001", amount_usd=amount, reason="goodwill")
        for amount in (50, 49, 48, 47, 46)
    ]
    handle = await runs.start(mode="auto", script=script)
    report = await handle.result()
    assert [c.status for c in report.calls] == [CallStatus.EXECUTED] * 3 + [CallStatus.DENIED] * 2
    assert {c.decision.rule for c in report.calls[3:]} == {"refund.within-refundable"}
    executed = [Decimal(str(c.args["amount_usd"])) for c in report.changes]
    assert executed == [Decimal("50.00"), Decimal("49.00"), Decimal("48.00")] and sum(executed) <= Decimal("180.00")
    assert [u.tool for u in report.undo] == ["payments.void_refund"] * 3
    assert [u.args["refund_id"] for u in report.undo] == [c.result["refund_id"] for c in reversed(report.changes)]
    assert count_rows(db, refunds, refunds.c.created_by == handle.id) == 3


# --- tool misuse ------------------------------------------------------------------------------------


async def test_tool_misuse_is_refused_by_schema_rule_or_tool(runs: Runs, db: Engine) -> None:
    """Legitimate tools bent to other ends: SQL in an id, a header injected into an address, a
    look-alike or suffixed domain, a field the agent may not change, a field that does not
    exist, a status that does not exist, a huge page size, a negative or sub-cent amount, a
    smuggled `approved` flag. Each is refused by the schema (naming the argument), a rule, or
    the tool itself; nothing is written."""
    misuse = [
        (
            call("orders.get_order", order_id="ORD-1001' OR '1'='1"),
            CallStatus.FAILED,
            "no order \"ORD-1001' OR '1'='1\"",
        ),
        (
            call("email.send", to="dana@example.com\nBcc: attacker@evil.test", subject="s", body="b"),
            CallStatus.INVALID,
            "to: String should match pattern",
        ),
        (
            call("email.send", to="attacker@example.com.evil.test", subject="s", body="b"),
            CallStatus.DENIED,
            "email.allowed-domains",
        ),
        (
            call("email.send", to="attacker@ex\u0430mple.com", subject="s", body="b"),
            CallStatus.DENIED,
            "email.allowed-domains",
        ),
        (
            call("crm.update_customer", customer_id="C-100", changes={"name": "Mallory"}),
            CallStatus.DENIED,
            "crm.allowed-fields",
        ),
        (
            call("crm.update_customer", customer_id="C-100", changes={"is_admin": "true"}),
            CallStatus.INVALID,
            "changes.is_admin.[key]: Input should be",
        ),
        (
            call("tickets.update_ticket", ticket_id="T-17", changes={"status": "deleted"}),
            CallStatus.INVALID,
            "changes.status: Input should be",
        ),
        (
            call("kb.search", query="refund", limit=1_000_000),
            CallStatus.INVALID,
            "limit: Input should be less than or equal to 20",
        ),
        (
            call("payments.create_refund", order_id="ORD-1001", amount_usd=-50, reason="r"),
            CallStatus.INVALID,
            "amount_usd: Input should be greater than 0",
        ),
        (
            call("payments.create_refund", order_id="ORD-1001", amount_usd="0.001", reason="r"),
            CallStatus.INVALID,
            "amount_usd: Decimal input should have no more than 2 decimal places",
        ),
        (
            call("payments.create_refund", order_id="ORD-1001", amount_usd=20, reason="r", approved=True),
            CallStatus.INVALID,
            "approved: Extra inputs are not permitted",
        ),
    ]
    handle = await runs.start(mode="auto", script=[m[0] for m in misuse])
    report = await handle.result()
    assert report.state is RunState.COMPLETED
    for record, (_, status, named) in zip(report.calls, misuse, strict=True):
        assert record.status is status, (record.tool, record.status, record.error)
        said = record.decision.rule if status is CallStatus.DENIED else record.error
        assert said.startswith(named), (said, named)
    assert report.changes == []
    assert count_rows(db, emails, emails.c.sent_by == handle.id) == 0
    assert count_rows(db, tickets, tickets.c.id == "T-17", tickets.c.status == "open") == 1
    assert count_rows(db, customers, customers.c.id == "C-100", customers.c.name == "Dana Whitfield") == 1


# --- privilege compromise --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"requested_by": "u_bob"}, "requested_by: 'u_bob' holds no role allowed to start runs (requester)"),
        ({"requested_by": "u_carol"}, "requested_by: 'u_carol' holds no role allowed to start runs (requester)"),
        ({"requested_by": "u_alice\u200b"}, "requested_by: 'u_alice\\u200b' holds no role allowed to start runs"),
        ({"agent": "root"}, "agent: 'root' is not defined in the policy"),
        ({"workspace": "ACME"}, "workspace: 'ACME' is not defined in the policy"),
    ],
    ids=["approver-starts", "admin-starts", "zero-width-requester", "unknown-agent", "case-variant-workspace"],
)
async def test_privilege_only_a_requester_starts_a_known_agent_in_a_known_workspace(
    runs: Runs, override: dict[str, str], named: str
) -> None:
    """Roles do not stack up into privilege: an approver or an admin cannot start a run (and so
    cannot approve their own work), and a look-alike requester, agent or workspace is unknown.
    The run fails at once, non-retryably, naming the field."""
    handle = await runs.start_raw(run_input(**override))
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), 10)
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.non_retryable and cause.type == "RunNotAllowed"
    assert named in cause.message


async def test_privilege_the_requester_cannot_approve_their_own_run(runs: Runs, db: Engine) -> None:
    """The person who started a run cannot approve its calls, by signal or by update; the
    refusals are recorded and the call goes on waiting for someone else."""
    handle = await runs.start(mode="approve", script=[REFUND_120])
    pending = (await runs.pending(handle)).pending_approvals[0]
    await handle.signal("approve", {"approval_id": pending.approval_id, "approver": "u_alice"})
    answer = await handle.execute_update(
        "decide",
        {"approval_id": pending.approval_id, "approver": "u_alice", "decision": "approve"},
        result_type=DecideResult,
    )
    assert not answer.accepted and answer.reason == "self-approval: u_alice requested this run"
    status = await runs.status(handle)
    assert status.pending_approvals[0].approvals_still_needed == 1
    await handle.cancel()
    report = await handle.result()
    assert [r.reason for r in report.refused_votes] == ["self-approval: u_alice requested this run"] * 2
    assert count_rows(db, refunds, refunds.c.created_by == handle.id) == 0


# --- resource overload ------------------------------------------------------------------------------


VARYING = [call("kb.search", query=f"refund {i}") for i in range(1000)]
SAME = [call("orders.get_order", order_id="ORD-1001")] * 1000


@pytest.mark.parametrize(
    ("script", "budget", "reason"),
    [
        (VARYING, {}, "max_steps: 20 of 20 steps used"),
        (VARYING, {"max_tool_calls": 5}, "max_tool_calls: 5 of 5 tool calls used"),
        (SAME, {}, "max_identical_calls: orders.get_order proposed 4 times with the same arguments (limit 3)"),
    ],
    ids=["default-budget", "tool-call-budget", "identical-calls"],
)
async def test_overload_a_looping_agent_is_stopped_by_its_budget(
    runs: Runs, script: list[dict[str, Any]], budget: dict[str, int], reason: str
) -> None:
    """An agent that makes a thousand calls, varied or the same one over and over (as an
    injection might tell it to), is stopped by the run's budget: the run ends
    `budget_exhausted` with the reason."""
    handle = await runs.start(budget=budget, script=script)
    report = await asyncio.wait_for(handle.result(), 20)
    assert report.state is RunState.BUDGET_EXHAUSTED and report.reason == reason
    await assert_not_stuck(runs.client, handle)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"goal": "x" * 20_001}, "goal: String should have at most 20000 characters"),
        ({"script": [{"answer": "a"}] * 10_001}, "model.script: List should have at most 10000 items"),
        ({"steps_per_history": 10_001}, "steps_per_history: Input should be less than or equal to 10000"),
        ({"budget": {"max_steps": 10**7}}, "budget.max_steps: Input should be less than or equal to 1000000"),
    ],
    ids=["goal", "script", "steps-per-history", "max-steps"],
)
async def test_overload_oversized_run_inputs_fail_fast_naming_the_field(
    runs: Runs, override: dict[str, Any], named: str
) -> None:
    """Run inputs sized to exhaust the worker are refused at once, naming the field."""
    handle = await runs.start(**override)
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), 10)
    assert named in failure.value.cause.message


async def test_overload_oversized_tool_arguments_are_invalid(runs: Runs) -> None:
    """Tool arguments sized to flood a mailbox or a query are refused by the schema, naming the
    argument."""
    handle = await runs.start(
        script=[
            call("email.send", to="dana@example.com", subject="s", body="x" * 20_001),
            call("kb.search", query="q" * 201),
            call("kb.search", query="refund", limit=21),
        ]
    )
    report = await handle.result()
    assert [c.error for c in report.calls] == [
        "body: String should have at most 20000 characters",
        "query: String should have at most 200 characters",
        "limit: Input should be less than or equal to 20",
    ]


async def test_overload_a_flood_of_votes_is_recorded_and_the_run_stays_healthy(runs: Runs, db: Engine) -> None:
    """A hundred votes from someone who is not an approver, sent as fast as possible, are each
    recorded with its reason; the real approval still goes through and no workflow task fails."""
    handle = await runs.start(mode="approve", script=[REFUND_120])
    pending = (await runs.pending(handle)).pending_approvals[0]
    await asyncio.gather(
        *(
            handle.signal("approve", {"approval_id": pending.approval_id, "approver": "u_mallory", "comment": str(i)})
            for i in range(100)
        )
    )
    await handle.signal("approve", {"approval_id": pending.approval_id, "approver": "u_bob"})
    report = await asyncio.wait_for(handle.result(), 20)
    assert report.calls[0].status is CallStatus.EXECUTED
    assert len(report.refused_votes) == 100
    assert {r.reason for r in report.refused_votes} == {"'u_mallory' is not a person in the policy"}
    await assert_not_stuck(runs.client, handle)


# --- overwhelming the human in the loop ------------------------------------------------------------


async def test_hitl_approval_requests_come_one_at_a_time_and_within_the_budget(runs: Runs) -> None:
    """An agent proposing fifty emails cannot bury the approvers: one request is pending at a
    time, each shows the exact arguments and diff, and the tool-call budget caps how many
    requests a run can make at all."""
    script = [call("email.send", to="dana@example.com", subject=f"note {i}", body="hello") for i in range(50)]
    handle = await runs.start(mode="approve", budget={"max_tool_calls": 3}, script=script)
    asked = 0
    while (status := await settle(runs, handle)).state is RunState.AWAITING_APPROVAL:
        assert len(status.pending_approvals) == 1
        pending = status.pending_approvals[0]
        assert pending.args["subject"] == f"note {asked}" and pending.diff
        asked += 1
        await handle.signal("deny", {"approval_id": pending.approval_id, "approver": "u_bob", "reason": "spam"})
    report = await handle.result()
    assert asked == 3
    assert report.state is RunState.BUDGET_EXHAUSTED and report.reason == "max_tool_calls: 3 of 3 tool calls used"
    assert sum(e.kind == "approval_requested" for e in await timeline(handle)) == 3


async def test_hitl_an_approval_names_one_exact_call(runs: Runs, db: Engine) -> None:
    """Approving a call approves that call only: the same email proposed again gets its own
    approval id, and re-sending the earlier approval does not release it."""
    email = call("email.send", to="dana@example.com", subject="Your refund", body="On its way.")
    handle = await runs.start(mode="auto", script=[email, email])
    first = (await runs.pending(handle)).pending_approvals[0].approval_id
    await handle.signal("approve", {"approval_id": first, "approver": "u_bob"})
    second = await runs.wait_for(
        handle, lambda s: bool(s.pending_approvals) and s.pending_approvals[0].approval_id != first
    )
    replay = await handle.execute_update(
        "decide", {"approval_id": first, "approver": "u_bob", "decision": "approve"}, result_type=DecideResult
    )
    assert not replay.accepted and replay.reason == f"approval {first} is already decided"
    assert (await runs.status(handle)).pending_approvals[0].approvals_still_needed == 1
    await handle.cancel()
    report = await handle.result()
    assert [c.status for c in report.calls] == [CallStatus.EXECUTED, CallStatus.STOPPED]
    assert second.pending_approvals[0].approval_id.startswith("apr-2-0-")
    assert count_rows(db, emails, emails.c.sent_by == handle.id) == 1


async def test_hitl_an_unanswered_request_counts_as_denied(
    client: Client, settings: Settings, tmp_path: Path, db: Engine
) -> None:
    """An approver who does not answer does not let the call through: once the tier's timeout
    passes, the call counts as denied and the run goes on."""
    policy = policy_file(tmp_path / "impatient.yaml", tiers={"high": {"timeout_s": 1}})
    assert load_policy(policy).tiers["high"].timeout_s == 1  # type: ignore[index]
    settings = settings.model_copy(update={"policy_path": policy})
    async with build_worker(client, settings):
        handle = await Runs(client, settings).start(
            script=[call("email.send", to="dana@example.com", subject="s", body="b"), {"answer": "gave up"}]
        )
        report = await asyncio.wait_for(handle.result(), 15)
    assert report.state is RunState.COMPLETED and report.answer == "gave up"
    assert report.calls[0].status is CallStatus.REJECTED
    assert report.calls[0].error == "no approval within 1s: the call counts as denied"
    assert count_rows(db, emails, emails.c.sent_by == handle.id) == 0


# --- repudiation ------------------------------------------------------------------------------------


async def test_repudiation_every_vote_is_attributed_timed_and_kept(client: Client, runs: Runs) -> None:
    """Who approved what, when and why cannot be denied afterwards: the report holds the counted
    vote (approver, decision, time, comment), the refused one (reason and payload), the rule
    that demanded approval, the policy hash and the undo; the timeline names the actor; and
    Temporal's history keeps each signal with the identity its client presented."""
    handle = await runs.start(mode="approve", script=[REFUND_120])
    pending = (await runs.pending(handle)).pending_approvals[0]
    await handle.signal("approve", {"approval_id": pending.approval_id, "approver": "u_alice", "comment": "trust me"})
    bob = await client_as(client, "u_bob@bob-laptop")
    await bob.get_workflow_handle(handle.id).signal(
        "approve", {"approval_id": pending.approval_id, "approver": "u_bob", "comment": "photos checked"}
    )
    report = await handle.result()

    refund = report.calls[0]
    assert refund.status is CallStatus.EXECUTED and refund.decision.rule == "refund.over-50-approval"
    [vote] = refund.votes
    assert (vote.approver, vote.decision, vote.comment) == ("u_bob", "approve", "photos checked")
    assert report.started_at <= vote.at <= report.finished_at
    [refused] = report.refused_votes
    assert refused.reason == "self-approval: u_alice requested this run"
    assert json.loads(refused.payload) == {
        "approval_id": pending.approval_id,
        "approver": "u_alice",
        "comment": "trust me",
    }
    assert report.policy_hash == load_policy(EXAMPLE_POLICY).content_hash()
    assert report.undo[0].tool == "payments.void_refund"
    entries = await timeline(handle)
    assert [(e.kind, e.actor) for e in entries if e.kind.startswith("approval_") and e.actor] == [
        ("approval_refused", "u_alice"),
        ("approval_vote", "u_bob"),
    ]
    assert await signal_identities(client, handle.id) == [("approve", client.identity), ("approve", "u_bob@bob-laptop")]


# --- identity spoofing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("approver", "reason"),
    [
        ("u_zed", "'u_zed' is not a person in the policy"),
        ("U_BOB", "'U_BOB' is not a person in the policy"),
        ("u_b\u043eb", "'u_b\u043eb' is not a person in the policy"),
        ("u_bob\u200b", "'u_bob\\u200b' is not a person in the policy"),  # the reason makes it visible
        ("u_bob,u_carol", "'u_bob,u_carol' is not a person in the policy"),
        ("airlock", "'airlock' is not a person in the policy"),
        ("u_dave", "u_dave lacks the role this tier needs (one of: approver)"),
        ("u_alice", "self-approval: u_alice requested this run"),
    ],
    ids=["unknown", "case-variant", "homoglyph", "zero-width", "two-names", "system-name", "no-role", "requester"],
)
async def test_spoofing_a_vote_in_a_name_that_may_not_approve_is_refused_and_recorded(
    runs: Runs, db: Engine, approver: str, reason: str
) -> None:
    """A vote naming someone who is not in the policy (an unknown name, a case variant, a
    homoglyph, a zero-width character, two names, a system name), a person without the role, or
    the requester is refused with its reason and kept; the call still needs its approval."""
    handle = await runs.start(mode="approve", script=[REFUND_120])
    pending = (await runs.pending(handle)).pending_approvals[0]
    answer = await handle.execute_update(
        "decide",
        {"approval_id": pending.approval_id, "approver": approver, "decision": "approve"},
        result_type=DecideResult,
    )
    assert not answer.accepted and answer.reason == reason and VOTE_REASONS.match(reason)
    assert (await runs.status(handle)).pending_approvals[0].approvals_still_needed == 1
    await handle.cancel()
    report = await handle.result()
    assert [(r.approver, r.reason) for r in report.refused_votes] == [(approver, reason)]
    assert count_rows(db, refunds, refunds.c.created_by == handle.id) == 0


async def test_spoofing_the_approver_name_is_a_claim_and_the_history_keeps_who_sent_it(
    client: Client, runs: Runs
) -> None:
    """Residual risk, shown as it is: a vote is attributed to the name in its payload, so a client
    that can signal the namespace and names u_bob is counted as u_bob. All that stands against it
    today is the record: Temporal keeps the identity the sending client presented next to the
    signal, so a careless impostor can be told apart afterwards. That identity is chosen by the
    client too, so a deliberate one is not. Signed approvals (a later issue) will make such a
    vote count for nothing."""
    handle = await runs.start(mode="approve", script=[REFUND_120])
    pending = (await runs.pending(handle)).pending_approvals[0]
    mallory = await client_as(client, "mallory@attacker-laptop")
    await mallory.get_workflow_handle(handle.id).signal(
        "approve", {"approval_id": pending.approval_id, "approver": "u_bob"}
    )
    report = await handle.result()
    assert [v.approver for v in report.calls[0].votes] == ["u_bob"]
    assert await signal_identities(client, handle.id) == [("approve", "mallory@attacker-laptop")]
