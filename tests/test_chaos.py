"""Short crash suite (the full one is `make chaos`): SIGKILL a worker right after a write commits."""

from __future__ import annotations

from temporalio.client import Client

from airlock.settings import Settings
from chaos.crash import crash_suite


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
