"""Short fault suite: misbehaving models, tools and databases end runs cleanly, never in a loop;
on SQLite and on PostgreSQL."""

from __future__ import annotations

import re

from sqlalchemy import Engine, text
from temporalio.client import Client

from contracts.models import CallStatus, RunState, Status
from runtime.settings import Settings
from tests.conftest import READ, Runs, call, count_rows, run_input
from tests.databases import both_databases  # noqa: F401  (runs every test here on both databases)
from tests.example_tools import faults
from tools.backoffice.db import refunds, tool_calls
from worker import build_worker


async def test_the_same_call_in_a_loop_ends_the_run(runs: Runs) -> None:
    """A model repeating one call (same tool, same arguments) is stopped, not indulged."""
    handle = await runs.start(script=[call("kb.search", query="refund")] * 10, budget={"max_identical_calls": 3})
    report = await handle.result()
    assert report.state is RunState.BUDGET_EXHAUSTED
    assert report.reason == "max_identical_calls: kb.search proposed 4 times with the same arguments (limit 3)"
    assert len(report.calls) == 4 and report.calls[-1].status is CallStatus.INVALID


async def test_huge_arguments_are_refused_before_anything_reads_them(runs: Runs) -> None:
    handle = await runs.start(
        script=[call("kb.search", query="x" * 40_000), call("orders.get_order", order_id="ORD-1001")]
    )
    report = await handle.result()
    assert report.state is RunState.COMPLETED
    assert report.calls[0].status is CallStatus.INVALID and "the limit is 32768" in report.calls[0].error
    assert report.calls[0].args == {}
    assert report.calls[1].status is CallStatus.EXECUTED


async def test_a_failing_tool_opens_the_circuit_instead_of_burning_the_budget(
    client: Client, fault_settings: Settings
) -> None:
    """After three calls whose activity gave up, the run stops calling the tool for a while and
    says so in `status`; other tools go on working."""
    faults.calls.clear()
    async with build_worker(client, fault_settings):
        runs = Runs(client, fault_settings)
        script = [call("faults.broken", key=str(i)) for i in range(5)] + [call("orders.get_order", order_id="ORD-1001")]
        handle = await runs.start(script=script, mode="approve")
        report = await handle.result()
        status = await handle.query("status", result_type=Status)
    assert report.state is RunState.COMPLETED
    statuses = [c.status for c in report.calls]
    assert statuses == [CallStatus.FAILED] * 5 + [CallStatus.EXECUTED]
    assert all("tool unavailable after retries" in c.error for c in report.calls[:3])
    assert all(c.error.startswith("circuit open: faults.broken") for c in report.calls[3:5])
    assert faults.calls["faults.broken"] == 3 * 3  # three calls, three attempts each; then none
    assert "faults.broken" in status.open_circuits


async def test_input_a_column_or_header_cannot_hold_is_an_invalid_call_on_either_database(
    runs: Runs, db: Engine
) -> None:
    """An over-long tier, a NUL byte and a line break in an e-mail subject are refused as invalid
    arguments naming the field, the same on SQLite and PostgreSQL; nothing is written, and the
    run goes on to its next call."""
    handle = await runs.start(
        script=[
            call(
                "crm.update_customer", customer_id="C-101", changes={"tier": "platinum-plus-lifetime-founding-member"}
            ),
            call("tickets.update_ticket", ticket_id="T-17", changes={"body": "cracked\x00carafe"}),
            call("email.send", to="dana@example.com", subject="Refund\r\nBcc: all@acme.test", body="Sent."),
            READ,
        ]
    )
    report = await handle.result()
    assert report.state is RunState.COMPLETED
    assert [c.status for c in report.calls] == [CallStatus.INVALID] * 3 + [CallStatus.EXECUTED]
    assert "tier: at most 32 characters (38 given)" in report.calls[0].error
    assert "body: text may not contain NUL" in report.calls[1].error
    assert "subject: String should match pattern" in report.calls[2].error
    assert count_rows(db, tool_calls) == 0


async def test_a_run_with_a_workflow_id_of_the_longest_kind_writes_once(runs: Runs, db: Engine) -> None:
    """A 1000-character workflow id (Temporal's limit) makes idempotency keys longer than the
    ledger's column and refund creators longer than the old varchar(200): the refund is written
    once and recorded, on both databases."""
    handle = await runs.start_raw(
        run_input(script=[call("payments.create_refund", order_id="ORD-1001", amount_usd=40, reason="damaged")]),
        workflow_id="w" * 1000,
    )
    report = await handle.result()
    assert report.state is RunState.COMPLETED and report.calls[0].status is CallStatus.EXECUTED
    assert len(report.calls[0].idempotency_key) > 1000
    assert count_rows(db, refunds, refunds.c.created_by == "w" * 1000) == 1 and count_rows(db, tool_calls) == 1


async def test_a_database_error_reaches_the_report_as_one_line_without_sql(runs: Runs, db: Engine) -> None:
    """The refunds table goes missing while a refund awaits approval: the call fails after its
    retries with a line naming the tool and the kind of failure; no SQL, no parameters, not the
    reason the agent wrote, in the report."""
    handle = await runs.start(
        mode="approve",
        script=[call("payments.create_refund", order_id="ORD-1001", amount_usd=120, reason="secret-reason-text")],
    )
    pending = await runs.pending(handle)
    with db.begin() as conn:
        conn.execute(text("ALTER TABLE refunds RENAME TO refunds_gone"))
    await handle.signal("approve", {"approval_id": pending.pending_approvals[0].approval_id, "approver": "u_bob"})
    report = await handle.result()
    error = report.calls[0].error or ""
    assert report.calls[0].status is CallStatus.FAILED
    assert re.match(
        r"tool unavailable after retries: Database(Unavailable|Error): payments\.create_refund: the database", error
    )
    for leak in ("SELECT", "INSERT", "refunds_gone", "secret-reason-text", "[SQL", "parameters"):
        assert leak not in error and leak not in (report.reason or "")
