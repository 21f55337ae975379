"""The control plane's durable home: each workspace's switches and model spend, in a database the
workers share.

A workspace's control workflow (`workspace:NAME`) decides who may throw or lift a switch, but it is
not where the switches live: anyone with write access to the namespace can terminate or reset that
workflow, and a new execution starts from its input. So every accepted change is committed here
first (compare-and-set on the generation, so no two control executions can interleave), and a
control workflow that starts afresh loads them from here.

The same table is the gate every governed tool call passes (`SwitchGate`): the worker reads it
before it starts a call, so a kill switch holds from the moment it commits, whatever the number of
runs in flight, and whatever messages anyone sends the runs. A worker that cannot read it starts no
call: the control plane fails closed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from contracts.workspace_io import DaySpend, SpendHold, SpendView, Switches
from tools.backoffice.db import WRITE_LOCK, connect, create_tables

metadata = MetaData()

workspace_switches = Table(
    "airlock_workspace_switches",
    metadata,
    Column("workspace", String(200), primary_key=True),
    Column("generation", Integer, nullable=False),
    Column("paused", Boolean, nullable=False),
    Column("safe_mode", Boolean, nullable=False),
    Column("changed_by", String(200), nullable=True),
    Column("reason", Text, nullable=False, default=""),
    Column("changed_at", String(40), nullable=False),
)

# How long a worker trusts its last reading of a workspace's switches for a read-only call: a
# switch committed now stops every read that starts later than this, and every write at once (a
# write reads the store as it starts). A query per read would cost every read a round trip.
GATE_TTL_S = 0.25


class StaleGeneration(Exception):
    """The store holds a newer generation than the writer read: another change came first."""

    def __init__(self, stored: Switches) -> None:
        super().__init__(f"the store holds generation {stored.generation}")
        self.stored = stored


class ControlStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str) -> ControlStore:
        store = cls(connect(url))
        store.create_schema()
        return store

    def create_schema(self) -> None:
        create_tables(self.engine, metadata)

    def read(self, workspace: str) -> Switches:
        """The switches in force; all off (generation 0) for a workspace that never threw one."""
        with self.engine.connect() as conn:
            row = conn.execute(select(workspace_switches).where(workspace_switches.c.workspace == workspace)).first()
        return _switches(row)

    def write(self, workspace: str, switches: Switches) -> Switches:
        """Commits `switches` if the store still holds the generation before it, or holds this
        very change already; raises StaleGeneration with what it holds otherwise."""
        now = datetime.now(UTC).isoformat()
        values = dict(
            generation=switches.generation,
            paused=switches.paused,
            safe_mode=switches.safe_mode,
            changed_by=switches.by,
            reason=switches.reason,
            changed_at=now,
        )
        with self.engine.connect() as c:
            conn = c.execution_options(**{WRITE_LOCK: True})
            with conn.begin():
                row = conn.execute(
                    select(workspace_switches).where(workspace_switches.c.workspace == workspace).with_for_update()
                ).first()
                held = _switches(row)
                if held == switches:
                    # This very change, committed by an earlier attempt whose answer was lost (a
                    # retried activity, a workflow task that failed after it ran): committed once.
                    return switches
                if held.generation != switches.generation - 1:
                    raise StaleGeneration(held)
                if row is None:
                    conn.execute(insert(workspace_switches).values(workspace=workspace, **values))
                else:
                    conn.execute(
                        update(workspace_switches).where(workspace_switches.c.workspace == workspace).values(**values)
                    )
        return switches


def _switches(row: Row[Any] | None) -> Switches:
    if row is None:
        return Switches()
    return Switches(
        generation=row.generation, paused=row.paused, safe_mode=row.safe_mode, by=row.changed_by, reason=row.reason
    )


class SwitchGate:
    """The check every governed tool call passes before it starts, in the worker that runs it."""

    def __init__(self, store: ControlStore, ttl_s: float = GATE_TTL_S) -> None:
        self.store = store
        self._ttl_s = ttl_s
        self._read: dict[str, tuple[float, Switches]] = {}
        self._lock = threading.Lock()

    def switches(self, workspace: str, *, fresh: bool = False) -> Switches:
        """The workspace's switches, read within the last `ttl_s` (now, when `fresh`). Raises when
        the store cannot be read: the caller must not start the call."""
        now = time.monotonic()
        if not fresh:
            with self._lock:
                cached = self._read.get(workspace)
            if cached is not None and now - cached[0] < self._ttl_s:
                return cached[1]
        switches = self.store.read(workspace)
        with self._lock:
            self._read[workspace] = (now, switches)
        return switches


# ---- the daily spend cap ------------------------------------------------------------------------

spend_days = Table(
    "airlock_spend_days",
    metadata,
    Column("workspace", String(200), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("spent_usd", Float, nullable=False, default=0.0),
    Column("cap_usd", Float, nullable=True),
    Column("refused", Integer, nullable=False, default=0),
)

spend_by = Table(
    "airlock_spend_by",
    metadata,
    Column("workspace", String(200), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("kind", String(16), primary_key=True),  # agent, requester or run
    Column("name", String(1000), primary_key=True),
    Column("usd", Float, nullable=False, default=0.0),
)

reservations = Table(
    "airlock_spend_reservations",
    metadata,
    Column("reservation_id", String(1200), primary_key=True),
    Column("workspace", String(200), nullable=False, index=True),
    Column("day", String(10), nullable=False),
    Column("run_id", String(1000), nullable=False),
    Column("agent", String(200), nullable=False),
    Column("requested_by", String(200), nullable=False),
    Column("usd", Float, nullable=False),
    # A hold whose call never settled (its worker died) counts as spent at its estimate from here.
    Column("expires_at", Float, nullable=False),
)

# Longer than a model call's start-to-close timeout: a hold still open after this was abandoned.
HOLD_EXPIRES_S = 300.0
DAYS_SHOWN = 7
NAMES_SHOWN = 2_000


class SpendLedger:
    """Each workspace's model spend per UTC day, and the holds of paid model calls in flight.

    A paid model call holds its estimated cost before it is made and settles its real cost after,
    both from inside the activity that makes the call: no message a run or anyone else sends can
    settle, shrink or lift a hold, and terminating the workspace's control workflow forgets nothing.
    Holds and the check against the cap are one transaction under the day's row lock, so calls
    racing for the last dollars never both get them.
    """

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock

    def hold(self, hold: SpendHold) -> str | None:
        """Holds the call's estimate; the reason it would pass the cap, or None once held."""
        with self._engine.connect() as c:
            conn = c.execution_options(**{WRITE_LOCK: True})
            self._ensure_day(conn, hold.workspace, hold.day)
            with conn.begin():
                day = self._lock_day(conn, hold.workspace, hold.day)
                if conn.execute(
                    select(reservations.c.usd).where(reservations.c.reservation_id == hold.reservation_id)
                ).first():
                    return None  # the same attempt asking again: held once
                self._expire(conn, hold.workspace)
                day = self._lock_day(conn, hold.workspace, hold.day)
                held = self._held(conn, hold.workspace, hold.day)
                conn.execute(
                    update(spend_days)
                    .where(spend_days.c.workspace == hold.workspace, spend_days.c.day == hold.day)
                    .values(cap_usd=hold.cap_usd)
                )
                if day.spent_usd + held + hold.usd > hold.cap_usd + 1e-12:
                    conn.execute(
                        update(spend_days)
                        .where(spend_days.c.workspace == hold.workspace, spend_days.c.day == hold.day)
                        .values(refused=spend_days.c.refused + 1)
                    )
                    return (
                        f"workspace {hold.workspace} daily spend cap: {day.spent_usd:.6f} USD spent and "
                        f"{held:.6f} reserved today; the next model call's estimated {hold.usd:.6f} "
                        f"would pass the cap of {hold.cap_usd:.6f} USD"
                    )
                conn.execute(
                    insert(reservations).values(
                        reservation_id=hold.reservation_id,
                        workspace=hold.workspace,
                        day=hold.day,
                        run_id=hold.run_id,
                        agent=hold.agent,
                        requested_by=hold.requested_by,
                        usd=hold.usd,
                        expires_at=self._clock() + HOLD_EXPIRES_S,
                    )
                )
        return None

    def settle(self, reservation_id: str, usd: float) -> None:
        """Ends a hold with what the call really cost, charged to the day it held on."""
        with self._engine.connect() as c:
            conn = c.execution_options(**{WRITE_LOCK: True})
            with conn.begin():
                row = conn.execute(
                    select(reservations).where(reservations.c.reservation_id == reservation_id).with_for_update()
                ).first()
                if row is None:
                    return  # settled already (a retried settlement)
                self._lock_day(conn, row.workspace, row.day)
                self._charge(conn, row, usd)

    def view(self, workspace: str) -> SpendView:
        """What `airlock workspace spend` shows: today first, then earlier days."""
        with self._engine.connect() as conn:
            days = conn.execute(
                select(spend_days)
                .where(spend_days.c.workspace == workspace)
                .order_by(spend_days.c.day.desc())
                .limit(DAYS_SHOWN)
            ).all()
            held = conn.execute(
                select(func.coalesce(func.sum(reservations.c.usd), 0.0)).where(reservations.c.workspace == workspace)
            ).scalar_one()
            shown = []
            for d in days:
                ledgers: dict[str, dict[str, float]] = {"agent": {}, "requester": {}, "run": {}}
                for r in conn.execute(
                    select(spend_by)
                    .where(spend_by.c.workspace == workspace, spend_by.c.day == d.day)
                    .order_by(spend_by.c.usd.desc())
                    .limit(NAMES_SHOWN)
                ):
                    ledgers[r.kind][r.name] = round(r.usd, 9)
                shown.append(
                    DaySpend(
                        day=d.day,
                        spent_usd=round(d.spent_usd, 9),
                        cap_usd=d.cap_usd,
                        refused=d.refused,
                        by_agent=ledgers["agent"],
                        by_requester=ledgers["requester"],
                        by_run=ledgers["run"],
                    )
                )
        return SpendView(workspace=workspace, reserved_usd=round(float(held), 9), days=shown)

    def _ensure_day(self, conn: Connection, workspace: str, day: str) -> None:
        try:
            with conn.begin():
                if (
                    conn.execute(
                        select(spend_days.c.day).where(spend_days.c.workspace == workspace, spend_days.c.day == day)
                    ).first()
                    is None
                ):
                    conn.execute(insert(spend_days).values(workspace=workspace, day=day, spent_usd=0.0, refused=0))
        except IntegrityError:
            pass  # another worker created it first

    def _lock_day(self, conn: Connection, workspace: str, day: str) -> Row[Any]:
        row = conn.execute(
            select(spend_days).where(spend_days.c.workspace == workspace, spend_days.c.day == day).with_for_update()
        ).first()
        if row is None:
            conn.execute(insert(spend_days).values(workspace=workspace, day=day, spent_usd=0.0, refused=0))
            row = conn.execute(
                select(spend_days).where(spend_days.c.workspace == workspace, spend_days.c.day == day)
            ).one()
        return row

    def _held(self, conn: Connection, workspace: str, day: str) -> float:
        return float(
            conn.execute(
                select(func.coalesce(func.sum(reservations.c.usd), 0.0)).where(
                    reservations.c.workspace == workspace, reservations.c.day == day
                )
            ).scalar_one()
        )

    def _expire(self, conn: Connection, workspace: str) -> None:
        """Holds whose calls never settled count as spent at their estimate: fail closed."""
        for row in conn.execute(
            select(reservations).where(reservations.c.workspace == workspace, reservations.c.expires_at < self._clock())
        ).all():
            self._lock_day(conn, row.workspace, row.day)
            self._charge(conn, row, row.usd)

    def _charge(self, conn: Connection, hold: Row[Any], usd: float) -> None:
        conn.execute(delete(reservations).where(reservations.c.reservation_id == hold.reservation_id))
        conn.execute(
            update(spend_days)
            .where(spend_days.c.workspace == hold.workspace, spend_days.c.day == hold.day)
            .values(spent_usd=spend_days.c.spent_usd + usd)
        )
        for kind, name in (("agent", hold.agent), ("requester", hold.requested_by), ("run", hold.run_id)):
            key = (
                spend_by.c.workspace == hold.workspace,
                spend_by.c.day == hold.day,
                spend_by.c.kind == kind,
                spend_by.c.name == name,
            )
            if conn.execute(select(spend_by.c.usd).where(*key)).first() is None:
                conn.execute(
                    insert(spend_by).values(workspace=hold.workspace, day=hold.day, kind=kind, name=name, usd=usd)
                )
            else:
                conn.execute(update(spend_by).where(*key).values(usd=spend_by.c.usd + usd))
