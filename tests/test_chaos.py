"""Short crash suite (the full one is `make chaos`): SIGKILL a worker right after a write commits."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client

from airlock.settings import Settings
from chaos.crash import crash_suite
from chaos.flaky import chaos_settings, flaky_suite


async def test_killed_workers_lose_nothing_and_repeat_nothing(client: Client, settings: Settings) -> None:
    """Every run ends final, each write happened exactly once, and the crash window was hit:
    at least one write re-executed after the crash was answered from the idempotency ledger."""
    result = await crash_suite(client, settings, runs=3, rounds=2)
    print("\n" + result.table())
    assert result.crashes == 2
    assert result.final == 3
    assert result.executed_writes == 9 and result.ledger_rows == 9
    assert result.duplicates == 0 and result.refund_rows == 3
    assert result.answered_from_ledger >= 1


async def test_flaky_tools_end_every_run_explicitly_without_duplicates(client: Client, settings: Settings, tmp_path: Path) -> None:
    """30% transient failures, retried within bounds: every run final, marks == ledger rows.
    Hangs past the timeout take a minute each, so only `make chaos` lets them hang."""
    result = await flaky_suite(client, chaos_settings(settings, tmp_path), runs=3, calls_per_run=4, hang_s=0.0)
    print("\n" + result.table())
    assert result.final == 3
    assert result.marks == result.ledger_rows == result.executed
    assert result.executed + result.failed_calls == 12
