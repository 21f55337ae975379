"""Large tool results, stored by reference so that histories stay small.

A result above the size threshold is written once to the back-office database under its
content hash, and the history keeps only a reference: `{"$blob": "sha256:…", "bytes": N,
"preview": "…"}`. Anything that needs the whole result (the model, `airlock show`) resolves it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import JsonValue
from sqlalchemy import Connection, Engine, insert, select
from sqlalchemy.exc import IntegrityError

from tools.backoffice.db import blobs

PREVIEW_CHARS = 200


def is_ref(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("$blob"), str)


def store(conn: Connection, value: JsonValue) -> dict[str, JsonValue]:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    exists = conn.execute(select(blobs.c.digest).where(blobs.c.digest == digest)).first()
    if exists is None:
        try:
            with conn.begin_nested():
                conn.execute(insert(blobs).values(digest=digest, content=text))
        except IntegrityError:
            pass  # the same content, stored by a concurrent call: content addressing makes it equal
    return {"$blob": digest, "bytes": len(text.encode()), "preview": text[:PREVIEW_CHARS]}


def maybe_store(conn: Connection, value: JsonValue, threshold: int) -> JsonValue:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return store(conn, value) if len(text.encode()) > threshold else value


def resolve(engine: Engine, value: JsonValue) -> JsonValue:
    """The full value behind a reference (or the value itself when it is not one)."""
    if not is_ref(value):
        return value
    assert isinstance(value, dict)
    with engine.connect() as conn:
        row = conn.execute(select(blobs.c.content).where(blobs.c.digest == value["$blob"])).first()
    if row is None:
        raise LookupError(f"blob {value['$blob']} is not in the back-office database")
    content: JsonValue = json.loads(row.content)
    return content
