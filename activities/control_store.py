"""The control plane's durable home: each workspace's switches, in a database the workers share.

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
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Boolean, Column, Engine, Integer, MetaData, Row, String, Table, Text, insert, select, update

from airlock.workspace_io import Switches
from tools.backoffice.db import WRITE_LOCK, connect

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
        self._engine = engine

    @classmethod
    def open(cls, url: str) -> ControlStore:
        store = cls(connect(url))
        store.create_schema()
        return store

    def create_schema(self) -> None:
        with self._engine.connect() as c:
            conn = c.execution_options(**{WRITE_LOCK: True})
            with conn.begin():
                metadata.create_all(conn)

    def read(self, workspace: str) -> Switches:
        """The switches in force; all off (generation 0) for a workspace that never threw one."""
        with self._engine.connect() as conn:
            row = conn.execute(select(workspace_switches).where(workspace_switches.c.workspace == workspace)).first()
        return _switches(row)

    def write(self, workspace: str, switches: Switches) -> Switches:
        """Commits `switches` if the store still holds the generation before it; raises
        StaleGeneration with what it holds otherwise."""
        now = datetime.now(UTC).isoformat()
        values = dict(
            generation=switches.generation,
            paused=switches.paused,
            safe_mode=switches.safe_mode,
            changed_by=switches.by,
            reason=switches.reason,
            changed_at=now,
        )
        with self._engine.connect() as c:
            conn = c.execution_options(**{WRITE_LOCK: True})
            with conn.begin():
                row = conn.execute(
                    select(workspace_switches).where(workspace_switches.c.workspace == workspace).with_for_update()
                ).first()
                held = _switches(row)
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
