"""Runs tools against the back office: validation, previews, and writes under idempotency keys.

Outcomes the workflow must branch on (invalid arguments, a refusal by the tool) come back as
values, not exceptions, so they cross the activity boundary as data and are never retried.
Infrastructure errors (the database is down) still raise, classified without their SQL
(`tools.db_errors`), and Temporal's retry policy owns them.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import Connection, Engine, Row, insert, select, text
from sqlalchemy.exc import IntegrityError

from contracts.activity_io import AlreadyExecuted, Executed, Prepared, Rejected
from contracts.hashing import call_hash
from contracts.models import Effect
from contracts.validation import describe_validation_error
from tools import blobs
from tools.backoffice.db import WRITE_LOCK, tool_calls
from tools.base import Caller, Preview, Tool, ToolContext, ToolError
from tools.db_errors import database_errors
from tools.registry import ToolRegistry


class ToolRunner:
    def __init__(self, registry: ToolRegistry, engine: Engine, blob_threshold: int = 4096) -> None:
        self.registry = registry
        self.engine = engine
        self.blob_threshold = blob_threshold

    def _parse(self, tool: Tool[Any, Any], raw: dict[str, Any]) -> BaseModel | Rejected:
        try:
            parsed: BaseModel = tool.input_model.model_validate(raw)
            return parsed
        except ValidationError as e:
            return Rejected(error=describe_validation_error(e), reason="invalid_arguments")

    def prepare(
        self,
        name: str,
        raw: dict[str, Any],
        workflow_id: str,
        step: int,
        key: str | None = None,
        caller: Caller | None = None,
    ) -> Prepared | Rejected | AlreadyExecuted:
        with database_errors(name):
            return self._prepare(name, raw, workflow_id, step, key, caller or Caller())

    def execute(
        self, name: str, args: dict[str, Any], key: str, workflow_id: str, step: int, caller: Caller | None = None
    ) -> Executed | Rejected:
        with database_errors(name):
            return self._execute(name, args, key, workflow_id, step, caller or Caller())

    def _prepare(
        self, name: str, raw: dict[str, Any], workflow_id: str, step: int, key: str | None, caller: Caller
    ) -> Prepared | Rejected | AlreadyExecuted:
        if name not in self.registry:
            return Rejected(error=f"unknown tool {name!r}", reason="unknown_tool")
        tool = self.registry.get(name)
        parsed = self._parse(tool, raw)
        if isinstance(parsed, Rejected):
            return parsed
        # Only what the caller gave: an explicit null (clear the assignee) differs from absent.
        args = parsed.model_dump(mode="json", exclude_unset=True)
        if key and tool.effect is not Effect.READ:
            # The ledger first: after a crash between a write's commit and its report, the
            # preparation runs again, and a preview now would see the write's own effect (less
            # left refundable) and the policy would decide on a state the call itself produced.
            done = self._ledgered(tool, parsed, key)
            if done is not None:
                return done if isinstance(done, Rejected) else AlreadyExecuted(args=args, executed=done)
        if tool.preview is None:
            return Prepared(args=args)
        try:
            with self.engine.connect() as conn, conn.begin():
                preview = tool.preview(ToolContext(conn, workflow_id, step, caller=caller), parsed)
        except ToolError as e:
            return Rejected(error=str(e), reason="tool_error")
        return Prepared(args=args, diff=preview.diff, facts=preview.facts)

    def _execute(
        self, name: str, args: dict[str, Any], key: str, workflow_id: str, step: int, caller: Caller
    ) -> Executed | Rejected:
        tool = self.registry.get(name)
        parsed = self._parse(tool, args)
        if isinstance(parsed, Rejected):
            return parsed
        if tool.effect is Effect.READ:
            try:
                with self.engine.connect() as conn, conn.begin():
                    out = tool.execute(ToolContext(conn, workflow_id, step, caller=caller), parsed)
                    result = blobs.maybe_store(conn, out.model_dump(mode="json"), self.blob_threshold)
            except ToolError as e:
                return Rejected(error=str(e), reason="tool_error")
            return Executed(result=result)
        return self._execute_once(tool, parsed, key, workflow_id, step, caller)

    def _execute_once(
        self, tool: Tool[Any, Any], parsed: BaseModel, key: str, workflow_id: str, step: int, caller: Caller
    ) -> Executed | Rejected:
        digest = call_hash(tool.name, parsed.model_dump(mode="json"))
        for _ in range(2):
            try:
                return self._write(tool, parsed, key, digest, workflow_id, step, caller)
            except IntegrityError:
                # A concurrent attempt with the same key committed first; the ledger now
                # holds its result, which the second pass returns.
                continue
        raise RuntimeError(f"idempotency ledger for {key[:200]!r} is inconsistent")

    def _ledgered(self, tool: Tool[Any, Any], parsed: BaseModel, key: str) -> Executed | Rejected | None:
        """What the ledger holds for `key`: the first execution, a conflict, or None."""
        digest = call_hash(tool.name, parsed.model_dump(mode="json"))
        with self.engine.connect() as conn:
            done = conn.execute(select(tool_calls).where(tool_calls.c.idempotency_key == ledger_key(key))).first()
        return None if done is None else _replayed(done, tool, digest, key)

    def _write(
        self,
        tool: Tool[Any, Any],
        parsed: BaseModel,
        key: str,
        digest: str,
        workflow_id: str,
        step: int,
        caller: Caller,
    ) -> Executed | Rejected:
        with self.engine.connect() as c:
            conn = c.execution_options(**{WRITE_LOCK: True})
            try:
                with conn.begin():
                    _lock_key(conn, key)
                    done = conn.execute(
                        select(tool_calls).where(tool_calls.c.idempotency_key == ledger_key(key))
                    ).first()
                    if done is not None:
                        return _replayed(done, tool, digest, key, keep_facts=False)
                    ctx = ToolContext(conn, workflow_id, step, key, caller)
                    # Inside the write's transaction, before the write: the true "before" values.
                    preview = tool.preview(ctx, parsed) if tool.preview else Preview()
                    out = tool.execute(ctx, parsed)
                    executed = Executed(
                        result=blobs.maybe_store(conn, out.model_dump(mode="json"), self.blob_threshold),
                        compensation=tool.undo_for(parsed, out, preview),
                        diff=preview.diff,
                    )
                    # The ledger keeps the facts too, so that a replayed preparation records
                    # what the write saw, never the state it produced.
                    conn.execute(
                        insert(tool_calls).values(
                            idempotency_key=ledger_key(key),
                            tool=tool.name,
                            args_hash=digest,
                            result=executed.model_copy(update={"facts": preview.facts}).model_dump_json(),
                        )
                    )
                    return executed
            except ToolError as e:
                # Raised inside the transaction, so nothing the tool did is kept.
                return Rejected(error=str(e), reason="tool_error")


# Keys up to this many characters are the ledger's primary key as they are; longer ones (a
# workflow id may have 1000 characters) by their hash, so that every valid key fits the column.
LEDGER_KEY_CHARS = 300


def ledger_key(key: str) -> str:
    if len(key) <= LEDGER_KEY_CHARS:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _lock_key(conn: Connection, key: str) -> None:
    """Serialises executions of one key: a second waits here until the first has committed (or
    rolled back), then finds its ledger row and returns its result. Without it, both would do the
    tool's work, and the second would check its limits against the first's committed write (a
    refund refused as over what is refundable, though its own key had committed). SQLite's BEGIN
    IMMEDIATE serialises every write already."""
    if conn.dialect.name == "postgresql":
        lock_id = int.from_bytes(
            hashlib.sha256(ledger_key(key).encode("utf-8", "surrogatepass")).digest()[:8], "big", signed=True
        )
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})


def _replayed(
    done: Row[Any], tool: Tool[Any, Any], digest: str, key: str, keep_facts: bool = True
) -> Executed | Rejected:
    """The first execution of `key` from its ledger row, or a conflict when the row is another call's."""
    if done.args_hash != digest or done.tool != tool.name:
        return Rejected(
            error=f"idempotency key {key[:200]!r} was already used for different arguments",
            reason="idempotency_conflict",
        )
    first = Executed.model_validate_json(done.result)
    return first.model_copy(update={"deduplicated": True, **({} if keep_facts else {"facts": None})})
