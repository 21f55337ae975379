"""The back-office tools the peers call: Airlock's own tool implementations, without Airlock.

So a peer's read returns the same order, and its refund writes the same rows under an
idempotency key, as Airlock's do; only the orchestration around them differs.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from typing import Any

from temporalio import activity

from tools.backoffice.db import connect, create_schema
from tools.registry import load_registry
from tools.runner import ToolRunner

_runner: ToolRunner | None = None
# How each tool call ended, to check that the peers did what the figures claim.
OUTCOMES: Counter[str] = Counter()
_tmp: tempfile.TemporaryDirectory[str] | None = None


def runner() -> ToolRunner:
    global _runner, _tmp
    if _runner is None:
        _tmp = tempfile.TemporaryDirectory(prefix="airlock-bench-peer-")
        engine = connect(f"{_tmp.name}/backoffice.db")
        create_schema(engine)
        _runner = ToolRunner(load_registry(["tools.backoffice"]), engine)
    return _runner


def close() -> None:
    global _runner, _tmp
    if _runner is not None:
        _runner.engine.dispose()
    if _tmp is not None:
        _tmp.cleanup()
    _runner, _tmp = None, None


def run_tool(name: str, args: dict[str, Any]) -> dict[str, Any]:
    info = activity.info()
    key = f"{info.workflow_id}/{info.workflow_run_id}/{info.activity_id}"
    outcome = runner().execute(name, args, key, info.workflow_id, 0)
    OUTCOMES[f"{name}: {outcome.kind}"] += 1
    return json.loads(outcome.model_dump_json())


# The three calls of the job, with the same arguments as Airlock's (bench.common.CALLS).
READ_ARGS = {"order_id": "ORD-1001"}
WRITE_ARGS = {"order_id": "ORD-1002", "amount_usd": 10, "reason": "damaged"}
DENIED_ARGS = {"order_id": "ORD-1002", "amount_usd": 500, "reason": "damaged"}
CALL_ARGS = {
    "read": ("get_order", READ_ARGS),
    "write": ("create_refund", WRITE_ARGS),
    "denied": ("create_refund", DENIED_ARGS),
}
JOB = ["read", "write", "denied"]
REFUND_LIMIT_USD = 200
DENIAL = "refunds above 200 USD are not issued by agents"


def plan_of(prompt: str) -> list[str]:
    """`plan:<kind>:<n>` -> the kinds of the calls to make, in order (`job` is read, write, denied)."""
    _, kind, n = prompt.split(":")
    return JOB[: int(n)] if kind == "job" else [kind] * int(n)
