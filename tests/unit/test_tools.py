"""The back office and its idempotency ledger, without Temporal, on SQLite and on PostgreSQL."""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, Table, select, text, update
from temporalio.exceptions import ApplicationError

from contracts.activity_io import AlreadyExecuted, Executed, Prepared, Rejected
from runtime.settings import Settings
from tests.conftest import count_rows
from tests.databases import both_databases  # noqa: F401  (runs every test here on both databases)
from tools.backoffice.db import WRITE_LOCK, connect, create_schema, customers, orders, refunds, tool_calls
from tools.registry import load_registry
from tools.runner import ToolRunner

REFUND = {"order_id": "ORD-1001", "amount_usd": "30", "reason": "damaged"}


@pytest.fixture
def runner(database: str) -> ToolRunner:
    engine = connect(database)
    create_schema(engine)
    return ToolRunner(load_registry(), engine)


def test_same_key_same_arguments_returns_the_first_result(runner: ToolRunner) -> None:
    first = runner.execute("payments.create_refund", REFUND, "k1", "wf", 1)
    again = runner.execute("payments.create_refund", {**REFUND, "amount_usd": 30.0}, "k1", "wf", 1)
    assert isinstance(first, Executed) and isinstance(again, Executed)
    assert again.deduplicated and again.result == first.result
    assert count_rows(runner.engine, refunds) == 1


def test_same_key_different_arguments_is_refused(runner: ToolRunner) -> None:
    runner.execute("payments.create_refund", REFUND, "k1", "wf", 1)
    other = runner.execute("payments.create_refund", {**REFUND, "amount_usd": "31"}, "k1", "wf", 1)
    assert isinstance(other, Rejected) and other.reason == "idempotency_conflict"
    assert count_rows(runner.engine, refunds) == 1


def test_concurrent_attempts_with_one_key_write_once(runner: ToolRunner) -> None:
    """Eight threads racing with the same key: the database lets exactly one write through."""
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(runner.execute("payments.create_refund", REFUND, "k9", "wf", 1)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(isinstance(r, Executed) for r in results)
    assert sum(not r.deduplicated for r in results) == 1  # type: ignore[attr-defined]
    assert count_rows(runner.engine, refunds) == 1 and count_rows(runner.engine, tool_calls) == 1


def test_a_prepared_call_whose_write_committed_gets_the_ledger_entry_not_a_new_preview(runner: ToolRunner) -> None:
    """Prepared again after its write committed (a crash lost the report), a call gets the first
    result, the diff and facts seen inside the write's transaction and its compensation, not a
    preview of the state the write produced (which would leave 150 refundable, not 180)."""
    first = runner.execute("payments.create_refund", REFUND, "k1", "wf", 1)
    assert isinstance(first, Executed) and [str(d) for d in first.diff] == [
        "orders[ORD-1001].refunded_usd: 0.00 -> 30.00"
    ]
    again = runner.prepare("payments.create_refund", REFUND, "wf", 1, "k1")
    assert isinstance(again, AlreadyExecuted) and again.executed.deduplicated
    assert again.executed.result == first.result and again.executed.compensation == first.compensation
    assert [str(d) for d in again.executed.diff] == ["orders[ORD-1001].refunded_usd: 0.00 -> 30.00"]
    assert again.executed.facts == {"order_total_usd": "180.00", "refundable_usd": "180.00"}
    # Another key, or none, previews the state as it is now.
    fresh = runner.prepare("payments.create_refund", REFUND, "wf", 2, "k2")
    assert isinstance(fresh, Prepared) and fresh.facts["refundable_usd"] == "150.00"
    conflict = runner.prepare("payments.create_refund", {**REFUND, "amount_usd": "31"}, "wf", 1, "k1")
    assert isinstance(conflict, Rejected) and conflict.reason == "idempotency_conflict"


def test_a_key_longer_than_the_ledger_column_still_writes_once(runner: ToolRunner) -> None:
    """A key built from a 1000-character workflow id fits the ledger (stored by its hash) and
    still deduplicates."""
    key = "w" * 1000 + "/0190-run/s1/c0"
    first = runner.execute("payments.create_refund", REFUND, key, "w" * 1000, 1)
    again = runner.execute("payments.create_refund", REFUND, key, "w" * 1000, 1)
    assert isinstance(first, Executed) and isinstance(again, Executed) and again.deduplicated
    assert count_rows(runner.engine, refunds) == 1 and count_rows(runner.engine, tool_calls) == 1


def test_a_refused_write_leaves_nothing_behind(runner: ToolRunner) -> None:
    """Over-refundable at execution time: the tool refuses inside the transaction; no row, no ledger."""
    runner.execute("payments.create_refund", {**REFUND, "amount_usd": "170"}, "k1", "wf", 1)
    late = runner.execute("payments.create_refund", {**REFUND, "amount_usd": "20"}, "k2", "wf", 2)
    assert isinstance(late, Rejected) and "exceeds the 10.00 USD still refundable" in late.error
    assert count_rows(runner.engine, refunds) == 1 and count_rows(runner.engine, tool_calls) == 1


def test_update_preview_and_compensation_restore_the_row(runner: ToolRunner) -> None:
    args = {"customer_id": "C-100", "changes": {"phone": "+1-555-0199", "notes": "vip"}}
    prepared = runner.prepare("crm.update_customer", args, "wf", 1)
    assert [(d.field, d.before, d.after) for d in prepared.diff] == [
        ("phone", "+1-555-0100", "+1-555-0199"),
        ("notes", "", "vip"),
    ]
    done = runner.execute("crm.update_customer", args, "k1", "wf", 1)
    undo = done.compensation
    assert undo.tool == "crm.update_customer"
    runner.execute(undo.tool, undo.args, "k1-undo", "wf", 1)
    with runner.engine.connect() as conn:
        row = conn.execute(select(customers).where(customers.c.id == "C-100")).one()
    assert (row.phone, row.notes) == ("+1-555-0100", "")


def test_invalid_arguments_name_each_problem(runner: ToolRunner) -> None:
    out = runner.prepare("email.send", {"to": "not-an-address", "subject": "", "cc": "x"}, "wf", 1)
    assert isinstance(out, Rejected) and out.reason == "invalid_arguments"
    for part in (
        "to: String should match pattern",
        "subject: String should have at least 1 character",
        "body: Field required",
        "cc: Extra inputs are not permitted",
    ):
        assert part in out.error


def test_a_team_adds_a_tool_by_naming_its_module(tmp_path: Path) -> None:
    """`AIRLOCK_TOOL_MODULES` loads a team's module beside the back office; no Airlock code changes."""
    settings = Settings(tool_modules="tools.backoffice, tools.examples.loyalty")
    registry = load_registry(settings.tool_module_list)
    assert "loyalty.balance" in registry and "payments.create_refund" in registry
    engine = connect(str(tmp_path / "bo.db"))
    create_schema(engine)
    for setup in registry.schemas:
        setup(engine)
    out = ToolRunner(registry, engine).execute("loyalty.balance", {"customer_id": "C-100"}, "", "wf", 1)
    assert isinstance(out, Executed) and out.result == {"customer_id": "C-100", "points": 1200}


def test_a_module_without_tools_is_refused() -> None:
    with pytest.raises(ValueError, match="must define TOOLS"):
        load_registry(["tools.base"])


@pytest.mark.parametrize(
    ("tool", "args", "error"),
    [
        (
            "crm.update_customer",
            {"customer_id": "C-100", "changes": {"tier": "t" * 40}},
            "tier: at most 32 characters (40 given)",
        ),
        (
            "crm.update_customer",
            {"customer_id": "C-100", "changes": {"notes": "a\x00b"}},
            "changes.notes: text may not contain NUL",
        ),
        ("payments.create_refund", {**REFUND, "reason": "bad\udcff"}, "reason: Input should be a valid string"),
        (
            "email.send",
            {"to": "dana@example.com", "subject": "Hi\r\nBcc: x@evil.test", "body": "b"},
            "subject: String should match pattern",
        ),
        (
            "email.send",
            {"to": "dana@example.com\nBcc: x@evil.test", "subject": "Hi", "body": "b"},
            "to: String should match pattern",
        ),
    ],
)
def test_what_a_column_or_header_cannot_hold_is_refused_before_anything_runs(
    runner: ToolRunner, tool: str, args: dict[str, object], error: str
) -> None:
    """Over-long values, NUL, invalid UTF-8 and line breaks in mail headers are invalid arguments,
    named by field, on both databases alike: neither the preview nor the write reaches the
    database, and nothing changes."""
    prepared = runner.prepare(tool, args, "wf", 1, "k1")
    executed = runner.execute(tool, args, "k1", "wf", 1)
    for out in (prepared, executed):
        assert isinstance(out, Rejected) and out.reason == "invalid_arguments" and error in out.error
    assert count_rows(runner.engine, tool_calls) == 0
    with runner.engine.connect() as conn:
        assert conn.execute(select(customers.c.tier, customers.c.notes).where(customers.c.id == "C-100")).one() == (
            "gold",
            "",
        )


def test_a_value_at_each_column_limit_is_stored(runner: ToolRunner) -> None:
    """The schemas' bounds are the columns' bounds: values at the limit fit on both databases."""
    changes = {"name": "n" * 200, "email": "e" * 320, "phone": "p" * 64, "tier": "t" * 32, "notes": "ü" * 20_000}
    out = runner.execute("crm.update_customer", {"customer_id": "C-100", "changes": changes}, "k1", "w" * 1000, 1)
    assert isinstance(out, Executed)
    with runner.engine.connect() as conn:
        row = conn.execute(select(customers).where(customers.c.id == "C-100")).one()
    assert (row.name, row.email, row.phone, row.tier, row.notes) == tuple(changes.values())


def test_a_database_error_names_the_tool_and_the_kind_never_the_sql(database: str) -> None:
    """A database that fails the call (here: its tables are missing) gives one line naming the
    tool and the kind of failure, typed for the retry policy, without SQL, parameters or the
    driver's error attached as a cause."""
    runner = ToolRunner(load_registry(), connect(database))
    with pytest.raises(ApplicationError) as caught:
        runner.execute("payments.create_refund", {**REFUND, "reason": "secret-reason-text"}, "k1", "wf", 1)
    error = caught.value
    assert error.message.startswith("payments.create_refund: ") and "\n" not in error.message
    assert error.type in ("DatabaseUnavailable", "DatabaseError")
    for leak in ("SELECT", "INSERT", "tool_calls", "secret-reason-text", "k1"):
        assert leak not in str(error)
    assert error.__cause__ is None and error.__suppress_context__


@contextlib.contextmanager
def held_from_outside(engine: Engine, table: Table, row_id: str, **values: object) -> Iterator[None]:
    """Another client's transaction holds `row_id` locked (PostgreSQL: SELECT ... FOR UPDATE; SQLite:
    the write lock), changes it to `values`, and commits when the block ends."""
    with engine.connect() as c:
        conn = c.execution_options(**{WRITE_LOCK: True})
        with conn.begin():
            conn.execute(select(table).where(table.c.id == row_id).with_for_update())
            conn.execute(update(table).where(table.c.id == row_id).values(**values))
            yield


def wait_until_blocked(engine: Engine, writers: int) -> None:
    """Until `writers` sessions wait on a lock (PostgreSQL); SQLite shows no waiters, so a pause."""
    if engine.dialect.name != "postgresql":
        time.sleep(0.5)
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            waiting = conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            ).scalar_one()
        if waiting >= writers:
            return
        time.sleep(0.02)
    raise AssertionError(f"{writers} writers never waited on the lock")


def test_two_updates_of_one_customer_each_record_the_value_the_other_left(runner: ToolRunner) -> None:
    """Two CRM updates of one customer race while another client holds the row: they run one
    after the other, each diff's "before" is what was there when it wrote (the outside change,
    then the other update's value), and undoing them newest first restores the outside value."""
    engine = runner.engine

    def update_to(phone: str, key: str) -> Callable[[], Any]:
        return lambda: runner.execute(
            "crm.update_customer", {"customer_id": "C-100", "changes": {"phone": phone}}, key, "wf", 1
        )

    with (
        concurrent.futures.ThreadPoolExecutor(2) as pool,
        held_from_outside(engine, customers, "C-100", phone="+1-555-0111"),
    ):
        futures = [pool.submit(update_to("+1-555-0122", "ka")), pool.submit(update_to("+1-555-0133", "kb"))]
        wait_until_blocked(engine, 2)
    results = [f.result(timeout=30) for f in futures]
    assert all(isinstance(r, Executed) for r in results)
    changes = [r.result["changed"][0] for r in results]  # type: ignore[union-attr,index]
    first, second = sorted(changes, key=lambda c: c["before"] != "+1-555-0111")
    assert first["before"] == "+1-555-0111" and second["before"] == first["after"]
    with engine.connect() as conn:
        assert conn.execute(select(customers.c.phone).where(customers.c.id == "C-100")).scalar_one() == second["after"]
    by_after = {r.result["changed"][0]["after"]: r for r in results}  # type: ignore[union-attr,index]
    for done in (by_after[second["after"]], by_after[first["after"]]):
        undo = done.compensation  # type: ignore[union-attr]
        runner.execute(undo.tool, undo.args, f"undo-{undo.args}", "wf", 2)
    with engine.connect() as conn:
        assert conn.execute(select(customers.c.phone).where(customers.c.id == "C-100")).scalar_one() == "+1-555-0111"


def test_two_executions_of_one_key_return_one_result_while_the_row_is_held(runner: ToolRunner) -> None:
    """The same refund (one key) executed twice at once, using most of what is refundable, while
    another client holds the order: one writes, the other waits for it and returns its result,
    instead of checking its limit against its own committed twin and refusing it."""
    engine = runner.engine
    refund = {**REFUND, "amount_usd": "170"}
    execute = lambda: runner.execute("payments.create_refund", refund, "k-same", "wf", 1)  # noqa: E731
    with (
        concurrent.futures.ThreadPoolExecutor(2) as pool,
        held_from_outside(engine, orders, "ORD-1001", status="delivered"),
    ):
        futures = [pool.submit(execute), pool.submit(execute)]
        wait_until_blocked(engine, 2)
    results = [f.result(timeout=30) for f in futures]
    assert all(isinstance(r, Executed) for r in results), results
    assert sorted(r.deduplicated for r in results) == [False, True]  # type: ignore[union-attr]
    assert results[0].result == results[1].result  # type: ignore[union-attr]
    assert count_rows(engine, refunds) == 1 and count_rows(engine, tool_calls) == 1
