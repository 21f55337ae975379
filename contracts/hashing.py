"""Canonical hashes of calls: one definition for idempotency, approval binding and audit."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def call_hash(tool: str, args: dict[str, Any]) -> str:
    """sha256 of the tool name and its arguments in canonical JSON."""
    return hashlib.sha256(canonical_json({"tool": tool, "args": args}).encode()).hexdigest()
