"""Short crash suite (the full one is `make chaos`): SIGKILL a worker right after a write commits."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from temporalio.client import Client

from chaos.crash import crash_suite, crash_windows
from chaos.flaky import chaos_settings, flaky_suite
from runtime.settings import Settings
from tests.databases import both_databases  # noqa: F401  (runs every test here on both databases)


async def test_killed_workers_lose_nothing_and_repeat_nothing(client: Client, settings: Settings) -> None:
    """Every run ends final, each write happened exactly once, and the crash window was hit:
    at least one write re-executed after the crash was answered from the idempotency ledger."""
    result = await crash_suite(client, settings, runs=3, rounds=2)
    assert result.crashes == 2
    assert result.final == 3
    assert result.executed_writes == 9 and result.ledger_rows == 9
    assert result.duplicates == 0 and result.refund_rows == 3
    assert result.answered_from_ledger >= 1


async def test_flaky_tools_end_every_run_explicitly_without_duplicates(
    client: Client, settings: Settings, tmp_path: Path
) -> None:
    """30% transient failures, retried within bounds: every run final, marks == ledger rows.
    Hangs past the timeout take a minute each, so only `make chaos` lets them hang."""
    result = await flaky_suite(client, chaos_settings(settings, tmp_path), runs=3, calls_per_run=4, hang_s=0.0)
    assert result.final == 3
    assert result.marks == result.ledger_rows == result.executed
    assert result.executed + result.failed_calls == 12


async def test_a_write_is_recorded_as_it_happened_whatever_crashed_when(client: Client, settings: Settings) -> None:
    """A worker SIGKILLed after a refund's preparation, after its decision, after its commit
    (before the report), during its approval wait, or after the commit of an approved refund: the
    refund uses most of what is left refundable, so deciding it again after its commit would deny
    it. Every run still ends with the refund executed once, the diff it really made (100.00 ->
    150.00 or 170.00, never from the state it produced), one side effect in the audit export, and
    an undo that voids it completely."""
    results = await crash_windows(client, settings)
    for r in results:
        assert r.crashed, r.window
        assert (r.state, r.status, r.diff) == ("completed", "executed", r.expected_diff), r.window
        assert r.refund_rows == 1 and r.side_effects == 1, r.window
        assert r.undo == "completed" and r.refundable_after_undo == Decimal("80.00"), r.window
    # Found in the ledger where the commit's task was lost; decided by the policy elsewhere.
    rules = {r.window: r.rule for r in results}
    assert rules["after commit, before report"] == "ledger.already_executed"
    assert rules["after prepare"] == rules["after the decision"] == "agent.capabilities"
