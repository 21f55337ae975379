"""Windowed limits, the durable half (activities/limit_ledger.py): counters in the control store,
held before a call and settled after it, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from activities.limit_ledger import LimitLedger
from contracts.policy_limits import LimitCharge, ReserveLimits, SettleLimits
from tests.databases import both_databases  # noqa: F401  (runs every test here on both databases)
from tools.backoffice.db import connect

HOUR = 3600


def ask(
    key: str, amount: str, *, max_: str = "1000", force: bool = False, limit: str = "refunds.daily"
) -> ReserveLimits:
    return ReserveLimits(
        workspace="acme",
        call_key=key,
        run_id=f"run-{key}",
        tool="payments.create_refund",
        charges=[LimitCharge(limit=limit, subject="u_alice", amount=Decimal(amount), max=Decimal(max_), window_s=HOUR)],
        force=force,
    )


def settle(key: str, executed: bool) -> SettleLimits:
    return SettleLimits(workspace="acme", call_keys=[key], executed=executed)


@pytest.fixture
def ledger(database: str) -> LimitLedger:
    return LimitLedger.open(database)


def test_runs_racing_for_the_last_room_under_a_max_never_both_get_it(ledger: LimitLedger) -> None:
    """Eight calls of 300 against a max of 1,000, all at once: exactly three are held."""
    start = threading.Barrier(8)
    held: list[bool] = []

    def one(n: int) -> None:
        start.wait()
        held.append(ledger.reserve(ask(f"k{n}", "300")).held)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(held) == [False] * 5 + [True] * 3
    assert ledger.total("acme", "refunds.daily", "u_alice", HOUR) == (Decimal(0), Decimal(900))


def test_asking_again_under_the_same_key_counts_nothing_twice(ledger: LimitLedger) -> None:
    """A retried or replayed reservation, and a settlement repeated, charge the call once."""
    first = ledger.reserve(ask("k1", "600"))
    again = ledger.reserve(ask("k1", "600"))
    assert first.held and again.held
    assert (first.counters[0].used, first.counters[0].again) == (Decimal(0), False)
    assert (again.counters[0].used, again.counters[0].again) == (Decimal(0), True)
    assert ledger.settle(settle("k1", True)) == 1
    assert ledger.settle(settle("k1", True)) == 0
    assert ledger.reserve(ask("k1", "600")).held  # the committed call asked once more
    assert ledger.total("acme", "refunds.daily", "u_alice", HOUR) == (Decimal(600), Decimal(0))
    assert not ledger.reserve(ask("k2", "600")).held


def test_a_call_that_did_not_run_releases_its_room(ledger: LimitLedger) -> None:
    """Released (the call failed, was denied or stopped), the charge no longer counts."""
    assert ledger.reserve(ask("k1", "900")).held
    assert not ledger.reserve(ask("k2", "200")).held
    assert ledger.settle(settle("k1", False)) == 1
    assert ledger.reserve(ask("k2", "200")).held


def test_a_charge_counts_until_its_window_has_passed(database: str) -> None:
    """Sliding: a call committed at t counts against a 1h limit until t + 1h, then not at all."""
    now = [1_000_000.0]
    ledger = LimitLedger(connect(database), clock=lambda: now[0])
    ledger.create_schema()
    assert ledger.reserve(ask("k1", "800")).held
    ledger.settle(settle("k1", True))
    now[0] += HOUR - 1
    refused = ledger.reserve(ask("k2", "300"))
    assert (refused.held, refused.counters[0].used) == (False, Decimal(800))
    now[0] += 1
    assert ledger.reserve(ask("k2", "300")).held


def test_an_approved_call_is_held_past_the_max(ledger: LimitLedger) -> None:
    """`force`: a person approved the call a limit sent to them; the counter shows it."""
    assert ledger.reserve(ask("k1", "900")).held
    forced = ledger.reserve(ask("k2", "300", force=True))
    assert forced.held
    assert forced.counters[0].used == Decimal(900)
    assert ledger.total("acme", "refunds.daily", "u_alice", HOUR) == (Decimal(0), Decimal(1200))


def test_a_call_under_two_limits_is_held_under_both_or_neither(ledger: LimitLedger) -> None:
    """All or none: one full counter holds nothing on the other."""
    assert ledger.reserve(ask("k0", "5", max_="5", limit="refunds.count")).held
    both = ReserveLimits(
        workspace="acme",
        call_key="k1",
        run_id="run-k1",
        tool="payments.create_refund",
        charges=[
            LimitCharge(limit="refunds.daily", subject="u_alice", amount=Decimal(10), max=Decimal(1000), window_s=HOUR),
            LimitCharge(limit="refunds.count", subject="u_alice", amount=Decimal(1), max=Decimal(5), window_s=HOUR),
        ],
    )
    assert not ledger.reserve(both).held
    assert ledger.total("acme", "refunds.daily", "u_alice", HOUR) == (Decimal(0), Decimal(0))


def test_a_store_that_cannot_be_reached_raises(tmp_path: Path) -> None:
    """No answer is no room: the reservation raises, and the run's call fails (fail closed)."""
    ledger = LimitLedger(connect(str(tmp_path / "missing" / "control.db")))
    with pytest.raises(OperationalError):
        ledger.reserve(ask("k1", "1"))
