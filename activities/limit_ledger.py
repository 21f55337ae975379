"""Windowed limits, the durable half: each workspace's counters, in the control store the workers
share (`AIRLOCK_CONTROL_DB`), beside the switches and the model spend.

A counter is (workspace, limit, subject: a requester, an agent or `*`). Each call a limit counts is
one entry under its counter, named by the call's idempotency key: `reserved` from just after the
call is decided until it has run, then `committed` (stamped with the time it was settled) or
deleted (the call did not run). A counter's total is the sum of its entries stamped within the
limit's window, sliding (policy/limits.py holds the arithmetic).

Reserving checks and holds in one transaction under the counter's row lock (`SELECT ... FOR
UPDATE`; on SQLite, `BEGIN IMMEDIATE`), so two runs racing for the last room under a max never
both get it. Asking again under the same key (a retried activity, a replayed workflow task, a
worker killed between the call's commit and its report) finds the entry and counts nothing twice.
An entry never settled (its run was terminated) counts until its window has passed: fail closed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Connection,
    Engine,
    Float,
    Index,
    MetaData,
    String,
    Table,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from contracts.policy_limits import CounterUse, LimitCharge, LimitsHeld, ReserveLimits, SettleLimits
from policy.limits import fits, from_micro, to_micro, window_start
from tools.backoffice.db import WRITE_LOCK, connect, create_tables

metadata = MetaData()

# One row per counter: what a reservation locks, so that checks of one counter go one at a time.
limit_counters = Table(
    "airlock_limit_counters",
    metadata,
    Column("workspace", String(200), primary_key=True),
    Column("limit_id", String(200), primary_key=True),
    Column("subject", String(1000), primary_key=True),
)

limit_entries = Table(
    "airlock_limit_entries",
    metadata,
    # The call's idempotency key and the limit's id: one entry per call and limit, ever.
    Column("entry_id", String(1500), primary_key=True),
    Column("call_key", String(1200), nullable=False, index=True),
    Column("workspace", String(200), nullable=False),
    Column("limit_id", String(200), nullable=False),
    Column("subject", String(1000), nullable=False),
    # Millionths of the limit's unit: sums stay exact (no float drift on money).
    Column("amount", BigInteger, nullable=False),
    Column("state", String(10), nullable=False),  # reserved | committed
    # When it was reserved, and once committed when it was settled (epoch seconds).
    Column("at", Float, nullable=False),
    Column("run_id", String(1000), nullable=False),
    Column("tool", String(200), nullable=False),
    Index("airlock_limit_entries_counter", "workspace", "limit_id", "subject", "at"),
)


def entry_id(call_key: str, limit: str) -> str:
    return f"{call_key}|{limit}"


class LimitLedger:
    """Reserve, settle and read windowed limits' counters. `now` (epoch seconds) may be passed to
    each method; the store's clock otherwise."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock

    @classmethod
    def open(cls, url: str) -> LimitLedger:
        ledger = cls(connect(url))
        ledger.create_schema()
        return ledger

    def create_schema(self) -> None:
        create_tables(self._engine, metadata)

    def reserve(self, request: ReserveLimits, now: float | None = None) -> LimitsHeld:
        """Holds every charge of the call, or none when one would pass its max (unless `force`).
        A charge already held under the call's key is not checked again: it was granted once."""
        at = self._clock() if now is None else now
        charges = sorted(request.charges, key=lambda c: (c.limit, c.subject))
        with self._engine.connect() as c:
            conn = c.execution_options(**{WRITE_LOCK: True})
            for charge in charges:
                self._ensure_counter(conn, request.workspace, charge)
            with conn.begin():
                for charge in charges:  # in one order, so that two calls never wait on each other
                    self._lock_counter(conn, request.workspace, charge)
                    self._prune(conn, request.workspace, charge, at)
                held = {
                    row.limit_id: row
                    for row in conn.execute(
                        select(limit_entries).where(limit_entries.c.call_key == request.call_key)
                    ).all()
                }
                seen: list[CounterUse] = []
                room = True
                for charge in charges:
                    used = self._used(conn, request.workspace, charge, at, entry_id(request.call_key, charge.limit))
                    again = charge.limit in held
                    # A charge held once under this key was granted: asking again grants it again.
                    room = room and (again or fits(used, charge))
                    seen.append(
                        CounterUse(limit=charge.limit, subject=charge.subject, used=from_micro(used), again=again)
                    )
                if not (room or request.force):
                    return LimitsHeld(held=False, counters=seen)
                for charge in charges:
                    micro = to_micro(charge.amount, up=True)
                    if charge.limit not in held:
                        conn.execute(
                            insert(limit_entries).values(
                                entry_id=entry_id(request.call_key, charge.limit),
                                call_key=request.call_key,
                                workspace=request.workspace,
                                limit_id=charge.limit,
                                subject=charge.subject,
                                amount=micro,
                                state="reserved",
                                at=at,
                                run_id=request.run_id,
                                tool=request.tool,
                            )
                        )
                    elif request.force and held[charge.limit].state == "reserved":
                        # Approved by a person: held from now, at the amount the call runs with.
                        conn.execute(
                            update(limit_entries)
                            .where(limit_entries.c.entry_id == entry_id(request.call_key, charge.limit))
                            .values(amount=micro, at=at)
                        )
        return LimitsHeld(held=True, counters=seen)

    def settle(self, request: SettleLimits, now: float | None = None) -> int:
        """Commits the calls' held entries (they ran), stamped now, or releases them (they did
        not). Entries already settled are left as they are, so settling again changes nothing.
        Returns how many entries changed."""
        at = self._clock() if now is None else now
        keys = limit_entries.c.call_key.in_(request.call_keys)
        open_ = limit_entries.c.state == "reserved"
        with self._engine.connect() as c:
            conn = c.execution_options(**{WRITE_LOCK: True})
            with conn.begin():
                if request.executed:
                    result = conn.execute(
                        update(limit_entries)
                        .where(keys, open_, limit_entries.c.workspace == request.workspace)
                        .values(state="committed", at=at)
                    )
                else:
                    result = conn.execute(
                        delete(limit_entries).where(keys, open_, limit_entries.c.workspace == request.workspace)
                    )
        return int(result.rowcount or 0)

    def total(
        self, workspace: str, limit: str, subject: str, window_s: int, now: float | None = None
    ) -> tuple[Decimal, Decimal]:
        """A counter's committed and reserved totals within the window ending now."""
        at = self._clock() if now is None else now
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(limit_entries.c.state, func.coalesce(func.sum(limit_entries.c.amount), 0))
                .where(
                    limit_entries.c.workspace == workspace,
                    limit_entries.c.limit_id == limit,
                    limit_entries.c.subject == subject,
                    limit_entries.c.at > window_start(at, window_s),
                )
                .group_by(limit_entries.c.state)
            ).all()
        by_state = {state: int(total) for state, total in rows}
        return from_micro(by_state.get("committed", 0)), from_micro(by_state.get("reserved", 0))

    def usage(
        self, workspace: str, limit: str, window_s: int, now: float | None = None
    ) -> list[tuple[str, Decimal, Decimal]]:
        """Every counter of a limit with anything in the window ending now: its subject, and its
        committed and reserved totals, by subject."""
        at = self._clock() if now is None else now
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(
                    limit_entries.c.subject,
                    limit_entries.c.state,
                    func.coalesce(func.sum(limit_entries.c.amount), 0),
                )
                .where(
                    limit_entries.c.workspace == workspace,
                    limit_entries.c.limit_id == limit,
                    limit_entries.c.at > window_start(at, window_s),
                )
                .group_by(limit_entries.c.subject, limit_entries.c.state)
            ).all()
        by_subject: dict[str, dict[str, int]] = {}
        for subject, state, total in rows:
            by_subject.setdefault(subject, {})[state] = int(total)
        return [
            (subject, from_micro(totals.get("committed", 0)), from_micro(totals.get("reserved", 0)))
            for subject, totals in sorted(by_subject.items())
        ]

    def _ensure_counter(self, conn: Connection, workspace: str, charge: LimitCharge) -> None:
        key = (
            limit_counters.c.workspace == workspace,
            limit_counters.c.limit_id == charge.limit,
            limit_counters.c.subject == charge.subject,
        )
        try:
            with conn.begin():
                if conn.execute(select(limit_counters.c.limit_id).where(*key)).first() is None:
                    conn.execute(
                        insert(limit_counters).values(
                            workspace=workspace, limit_id=charge.limit, subject=charge.subject
                        )
                    )
        except IntegrityError:
            pass  # another worker created it first

    def _lock_counter(self, conn: Connection, workspace: str, charge: LimitCharge) -> None:
        conn.execute(
            select(limit_counters.c.limit_id)
            .where(
                limit_counters.c.workspace == workspace,
                limit_counters.c.limit_id == charge.limit,
                limit_counters.c.subject == charge.subject,
            )
            .with_for_update()
        ).first()

    def _prune(self, conn: Connection, workspace: str, charge: LimitCharge, at: float) -> None:
        """Entries past the window no longer count, a reserved one neither: it has counted its
        window's worth. (A call still waiting for approval that long holds again when approved.)"""
        conn.execute(
            delete(limit_entries).where(
                *_counter(workspace, charge), limit_entries.c.at <= window_start(at, charge.window_s)
            )
        )

    def _used(self, conn: Connection, workspace: str, charge: LimitCharge, at: float, own: str) -> int:
        """The counter's total within the window, the call's own entry excluded."""
        return int(
            conn.execute(
                select(func.coalesce(func.sum(limit_entries.c.amount), 0)).where(
                    *_counter(workspace, charge),
                    limit_entries.c.at > window_start(at, charge.window_s),
                    limit_entries.c.entry_id != own,
                )
            ).scalar_one()
        )


def _counter(workspace: str, charge: LimitCharge) -> tuple[ColumnElement[bool], ...]:
    return (
        limit_entries.c.workspace == workspace,
        limit_entries.c.limit_id == charge.limit,
        limit_entries.c.subject == charge.subject,
    )
