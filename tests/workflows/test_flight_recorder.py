"""The four questions, answered from histories alone: show, replay, undo, audit export."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from sqlalchemy import Engine, select

from airlock.show import flight_record
from contracts.audit import AuditEvent
from contracts.models import CallStatus
from contracts.undo_io import UndoReport
from recorder.flight_recorder import ReplayFailed, load_history, merge, reconstruct, replay
from runtime.settings import EXAMPLE_POLICY, Settings
from tests.conftest import AirlockCli, Runs, call, recorded_openai_provider
from tests.history_scenarios import HISTORIES, histories_of
from tests.mutated_workflow import AgentRunWithAnExtraTimer
from tools.backoffice.db import customers, refunds, tickets

SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "audit-event.schema.json"


@pytest.mark.parametrize("name", ["approved", "denied", "budget_exhausted", "stopped", "continued"])
async def test_show_answers_from_a_history_file(name: str) -> None:
    """Who approved, what changed, how to undo, what it cost: from the committed files alone
    (a continue-as-new chain is one file per run, joined in order)."""
    files = sorted(HISTORIES.glob(f"{name}.*json"), key=lambda p: (p.name.count("."), p.name))
    rec = merge([await reconstruct(load_history(path)) for path in files])
    record = flight_record(rec)
    assert record.closed
    assert record.workflow_id.startswith("run-")
    assert record.timeline[0].kind == "run_started" and record.timeline[-1].kind == "run_finished"
    if name == "approved":
        assert [a.approvers for a in record.who_approved] == [["u_bob (approve)"]]
        assert record.what_changed[0].diff == [
            {"field": "orders[ORD-1001].refunded_usd", "before": "0.00", "after": "120.00"}
        ]
        assert record.how_to_undo[0].compensation == "payments.void_refund"
    if name == "stopped":
        assert record.state == "stopped" and record.calls[-1].status is CallStatus.STOPPED
    if name == "continued":
        assert [c.step for c in record.calls] == [1, 2, 3, 4, 5]
        assert [e.kind for e in record.timeline].count("continued_as_new") == 2


async def test_show_a_live_run_waiting_for_approval(runs: Runs, airlock_cli: AirlockCli) -> None:
    """`airlock show RUN_ID` works on a run that is not finished, from its history."""
    handle = await runs.start(
        mode="approve", script=[call("payments.create_refund", order_id="ORD-1001", amount_usd=120, reason="x")]
    )
    await runs.pending(handle)
    status, out = await airlock_cli("show", handle.id, "--json")
    assert status == 0
    shown = json.loads(out)
    assert shown["state"] == "awaiting_approval" and shown["closed"] is False
    assert shown["who_approved"][0]["outcome"] == "awaiting_approval"
    status, text = await airlock_cli("show", handle.id)
    assert "approval_requested" in text and "(still open)" in text
    await handle.cancel()


async def test_replay_command_over_committed_histories(airlock_cli: AirlockCli) -> None:
    files = [str(p) for p in sorted(HISTORIES.glob("*.json"))]
    status, out = await airlock_cli("replay", *files)
    assert status == 0 and f"{len(files)} of {len(files)} histories replay" in out


async def test_a_non_deterministic_code_change_is_caught(
    monkeypatch: pytest.MonkeyPatch, airlock_cli: AirlockCli
) -> None:
    """`airlock replay` exits 1 and names the history when the code no longer matches it."""
    history = load_history(HISTORIES / "approved.json")
    await replay(history)  # today's code: fine
    with pytest.raises(ReplayFailed, match="TMPRL1100"):
        await replay(history, workflows=[AgentRunWithAnExtraTimer])
    monkeypatch.setattr("recorder.flight_recorder.WORKFLOWS", [AgentRunWithAnExtraTimer])
    files = [str(HISTORIES / "approved.json"), str(HISTORIES / "budget_exhausted.json")]
    status, out = await airlock_cli("replay", *files)
    assert status == 1
    assert f"NOT deterministic  {files[0]}" in out and "0 of 2 histories replay" in out


def rows(db: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with db.connect() as conn:
        return {
            "customers": [tuple(r) for r in conn.execute(select(customers).order_by(customers.c.id))],
            "tickets": [tuple(r) for r in conn.execute(select(tickets).order_by(tickets.c.id))],
            "issued_refunds": [tuple(r) for r in conn.execute(select(refunds).where(refunds.c.status == "issued"))],
        }


async def test_undo_restores_the_prior_rows_and_a_second_undo_is_a_no_op(
    runs: Runs, db: Engine, airlock_cli: AirlockCli
) -> None:
    """A refund, a CRM update and a ticket change are compensated newest first, each through the
    policy (the void needs an approver); an email is reported as impossible to undo."""
    before = rows(db)
    handle = await runs.start(
        script=[
            call("payments.create_refund", order_id="ORD-1001", amount_usd=40, reason="damaged"),
            call("crm.update_customer", customer_id="C-100", changes={"phone": "+1-555-0199", "notes": "refunded"}),
            call("tickets.update_ticket", ticket_id="T-17", changes={"status": "closed", "assignee": "u_bob"}),
        ]
    )
    email = call("email.send", to="dana@example.com", subject="Refund", body="Sent.")
    handle_email = await runs.start(script=[email])
    approval = (await runs.pending(handle_email)).pending_approvals[0].approval_id
    await handle_email.signal("approve", {"approval_id": approval, "approver": "u_bob"})
    await handle_email.result()
    report = await handle.result()
    assert [c.status for c in report.calls] == [CallStatus.EXECUTED] * 3
    assert rows(db) != before

    status, out = await airlock_cli("undo", handle.id)
    assert status == 0 and f"undo-{handle.id}.compensations" in out
    child = runs.client.get_workflow_handle(f"undo-{handle.id}.compensations")
    pending = await runs.pending(child)
    # What the Temporal Web UI lists them by.
    undo_run = runs.client.get_workflow_handle(f"undo-{handle.id}")
    assert await (await undo_run.describe()).static_summary() == f"Undo of {handle.id}, asked by its requester"
    assert await (await child.describe()).static_summary() == f"Undo of {handle.id}: 3 compensation(s), newest first"
    assert pending.pending_approvals[0].tool == "payments.void_refund"
    await child.signal("approve", {"approval_id": pending.pending_approvals[0].approval_id, "approver": "u_bob"})
    undo_report = await runs.client.get_workflow_handle(f"undo-{handle.id}", result_type=UndoReport).result()
    assert undo_report.state == "completed"
    assert [s.compensation.tool for s in undo_report.undone] == [
        "tickets.update_ticket",
        "crm.update_customer",
        "payments.void_refund",
    ]
    assert rows(db) == before

    status, out = await airlock_cli("undo", handle.id)
    assert status == 0 and "already undone" in out
    assert rows(db) == before

    status, out = await airlock_cli("show", handle.id, "--json")
    assert json.loads(out)["undone_by"]

    status, out = await airlock_cli("undo", handle_email.id, "--wait")
    assert status == 0 and "NOT undone step 1 email.send: an email cannot be unsent" in out


async def test_undo_of_a_running_run_is_refused(runs: Runs, airlock_cli: AirlockCli) -> None:
    handle = await runs.start(
        mode="approve", script=[call("payments.create_refund", order_id="ORD-1001", amount_usd=120, reason="x")]
    )
    await runs.pending(handle)
    status, _ = await airlock_cli("undo", handle.id, "--wait")
    assert status == 1
    await handle.cancel()


STRICTER = """
  payments.create_refund:
    rules:
      - id: refund.max-200
        effect: deny
        when: {arg: amount_usd, gt: 200}
      - id: refund.within-refundable
        effect: deny
        when: {arg: amount_usd, gt_fact: refundable_usd}
      - id: refund.over-10-approval
        effect: require_approval
        when: {arg: amount_usd, gt: 10}
"""


async def test_counterfactual_policy_flags_exactly_the_calls_it_should(
    runs: Runs, tmp_path: Path, airlock_cli: AirlockCli
) -> None:
    """A stricter policy turns the 30 USD refund into one needing approval and the email into a
    deny; the read and the 5 USD refund are unchanged; the approved 120 USD refund stays approved
    (same call, and u_bob still satisfies the tier)."""
    handle = await runs.start(
        script=[
            call("orders.get_order", order_id="ORD-1002"),
            call("payments.create_refund", order_id="ORD-1002", amount_usd=5, reason="late"),
            call("payments.create_refund", order_id="ORD-1002", amount_usd=30, reason="late"),
            call("payments.create_refund", order_id="ORD-1002", amount_usd=120, reason="late"),
            call("email.send", to="ravi@acme.test", subject="Refunds", body="Done."),
        ]
    )
    for _ in range(2):
        approval_id = (await runs.pending(handle)).pending_approvals[0].approval_id
        await handle.signal("approve", {"approval_id": approval_id, "approver": "u_bob"})
        await runs.wait_for(
            handle,
            lambda s, seen=approval_id: not s.pending_approvals or s.pending_approvals[0].approval_id != seen,
        )
    await handle.result()
    history = tmp_path / "run.json"
    history.write_text((await histories_of(runs.client, handle))[-1])

    text = EXAMPLE_POLICY.read_text()
    start = text.index("  payments.create_refund:\n")
    end = text.index("  payments.void_refund:\n")
    stricter = text[:start] + STRICTER.lstrip("\n") + "\n" + text[end:]
    stricter = stricter.replace("when: {arg: to, domain_not_in: [acme.test, example.com]}", "when: {always: true}")
    policy_file = tmp_path / "stricter.yaml"
    policy_file.write_text(stricter)

    status, out = await airlock_cli("replay", "--policy", str(policy_file), "--json", str(history))
    assert status == 0
    result = json.loads(out)
    flagged = [
        (c["tool"], c["args"].get("amount_usd"), c["before"]["label"], c["after"]["label"])
        for c in result["calls"]
        if c["before"]["label"] != c["after"]["label"]
    ]
    assert flagged == [
        ("payments.create_refund", "30.00", "allowed", "needs approval"),
        ("email.send", None, "approved", "denied"),
    ]
    assert result["summary"] == {"allowed → needs approval": 1, "approved → denied": 1, "unchanged": 3}


async def test_audit_export_lines_validate_and_match_the_live_log(
    runs: Runs, settings: Settings, airlock_cli: AirlockCli, caplog: pytest.LogCaptureFixture
) -> None:
    """Every exported line validates against the published schema, and the worker logged the
    same events while the run executed."""
    assert json.loads(SCHEMA.read_text()) == AuditEvent.model_json_schema(), "regenerate docs/audit-event.schema.json"
    since = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    caplog.set_level("INFO", logger="temporalio.workflow")
    handle = await runs.start(
        workspace="acme",
        mode="approve",
        script=[
            call("orders.get_order", order_id="ORD-1001"),
            call("crm.update_customer", customer_id="C-101", changes={"tier": "gold"}),
        ],
    )
    pending = await runs.pending(handle)
    await handle.signal("approve", {"approval_id": pending.pending_approvals[0].approval_id, "approver": "u_dave"})
    await handle.signal("approve", {"approval_id": pending.pending_approvals[0].approval_id, "approver": "u_carol"})
    await handle.result()
    out = Path(settings.db).parent / "audit.jsonl"
    status, _ = await airlock_cli("audit", "export", "--since", since, "--workspace", "acme", "--output", str(out))
    assert status == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    mine = [e for e in lines if e["run_id"] == handle.id]
    schema = json.loads(SCHEMA.read_text())
    for event in lines:
        jsonschema.validate(event, schema)
    types = [e["type"] for e in mine]
    for expected in [
        "run_started",
        "model_call",
        "proposal",
        "decision",
        "approval_requested",
        "approval_refused",
        "approval",
        "tool_call",
        "side_effect",
        "run_finished",
    ]:
        assert expected in types, expected
    effect = next(e for e in mine if e["type"] == "side_effect")
    assert effect["diff"] == [{"field": "tier", "before": "standard", "after": "gold"}]
    assert effect["idempotency_key"].startswith(handle.id) and len(effect["args_hash"]) == 64
    logged = {getattr(r, "airlock", {}).get("event_id") for r in caplog.records}
    assert {e["event_id"] for e in mine} <= logged


async def test_large_tool_results_are_stored_by_reference(
    runs: Runs, db: Engine, monkeypatch: pytest.MonkeyPatch, settings: Settings, airlock_cli: AirlockCli
) -> None:
    """A 20 KB result costs the history a hash and a preview; `airlock show` resolves it."""
    from sqlalchemy import insert

    from tools.backoffice.db import kb_articles

    body = "Warranty terms. " * 1250
    with db.begin() as conn:
        conn.execute(insert(kb_articles).values(id="KB-9", title="Warranty", body=body))
    handle = await runs.start(script=[call("kb.search", query="warranty")])
    report = await handle.result()
    ref = report.calls[0].result
    assert set(ref) == {"$blob", "bytes", "preview"} and ref["bytes"] > 20_000
    history = (await histories_of(runs.client, handle))[-1]
    small = await runs.start(script=[call("kb.search", query="refund")])
    small_history = (await histories_of(runs.client, small))[-1]
    assert len(history) - len(small_history) < 2_000
    monkeypatch.setenv("AIRLOCK_DB", settings.db)
    status, out = await airlock_cli("show", handle.id, "--json")
    assert status == 0
    assert json.loads(out)["calls"][0]["result"]["articles"][0]["body"] == body


async def test_counterfactual_model_compares_proposals_step_by_step(runs: Runs, settings: Settings) -> None:
    """Another model, asked at each recorded step with the recorded results, proposes other
    calls: each is marked, decided by the policy, and no recorded approval is reused for it."""
    from airlock.counterfactual import under_model

    handle = await runs.start(script=[call("orders.get_order", order_id="ORD-1001")])
    await handle.result()
    rec = await reconstruct(await runs.client.get_workflow_handle(handle.id).fetch_history())
    provider = recorded_openai_provider(settings)
    result = await under_model(rec, rec.memory.context.policy, provider, "openai", "gpt-4o-mini")
    labels = [(c.tool, c.before.label, c.after.label) for c in result.calls]
    assert ("orders.get_order", "allowed", "not proposed") in labels  # ORD-1001 was the recorded call
    assert ("shell__exec", "not proposed", "invalid") in labels
    refund = next(c for c in result.calls if c.tool == "payments.create_refund")
    assert refund.before.label == "not proposed" and "no recorded approval applies" in refund.note
    assert result.model_after == "openai:gpt-4o-mini"
