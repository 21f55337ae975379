"""What the two peers share: Airlock's own tool implementations without Airlock, the job's calls,
and the driver that measures a peer's histories the way Airlock's are measured.

So a peer's read returns the same order, and its refund writes the same rows under an
idempotency key, as Airlock's do; only the orchestration around them differs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from temporalio import activity
from temporalio.client import Client

from bench.common import (
    CALLS,
    HistorySize,
    backoffice_runner,
    history_size,
    new_id,
    plan_of,
    result_or_stuck,
    sizes_by_kind,
)
from tools.runner import ToolRunner

_runner: ToolRunner | None = None
# How each tool call ended, to check that the peers did what the figures claim.
OUTCOMES: Counter[str] = Counter()
_tmp: tempfile.TemporaryDirectory[str] | None = None


def runner() -> ToolRunner:
    global _runner, _tmp
    if _runner is None:
        _tmp = tempfile.TemporaryDirectory(prefix="airlock-bench-peer-")
        _runner = backoffice_runner(f"{_tmp.name}/backoffice.db")
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


# The job's calls as the peers' tools take them: Airlock's arguments (bench.common.CALLS).
CALL_ARGS: dict[str, tuple[str, dict[str, Any]]] = {
    "read": ("get_order", CALLS["read"]["args"]),
    "write": ("create_refund", CALLS["write"]["args"]),
    "denied": ("create_refund", CALLS["denied"]["args"]),
}
REFUND_LIMIT_USD = 200
DENIAL = "refunds above 200 USD are not issued by agents"


# ---- the driver (child process) --------------------------------------------------------------


async def drive(client: Client, workflow: type[Any], task_queue: str, id_prefix: str, prompt: str) -> HistorySize:
    """Runs the peer's job workflow on `prompt`, approves its writes as they come up, and measures
    its history. `workflow` has the peers' `run`, `approve` and `pending_approvals`."""
    approvals = plan_of(prompt).count("write")
    handle = await client.start_workflow(workflow.run, prompt, id=new_id(id_prefix), task_queue=task_queue)
    seen: set[str] = set()
    deadline = time.monotonic() + 120
    while len(seen) < approvals:
        for call_id in await handle.query(workflow.pending_approvals):
            if call_id not in seen:
                seen.add(call_id)
                await handle.signal(workflow.approve, call_id)
        if time.monotonic() > deadline:
            raise TimeoutError("no approval request came up")
        await asyncio.sleep(0.01)
    await result_or_stuck(handle)
    return await history_size(client, handle.id)


async def job_sizes(client: Client, workflow: type[Any], task_queue: str, id_prefix: str, n: int) -> dict[str, Any]:
    """The same runs as `bench.airlock_history.measure`: 0, N and 2N calls of each kind, and the
    three-call job."""
    return await sizes_by_kind(lambda kind, k: drive(client, workflow, task_queue, id_prefix, f"plan:{kind}:{k}"), n)


def main(measure: Callable[[str, int], Coroutine[Any, Any, dict[str, Any]]], packages: tuple[str, ...]) -> None:
    """A peer's command line: `--address HOST:PORT --n N`; prints one JSON line for `bench.run`."""
    from importlib.metadata import version

    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--n", type=int, default=10)
    a = parser.parse_args()
    try:
        sizes = asyncio.run(measure(a.address, a.n))
        versions = {p: version(p) for p in packages}
        result = {"ok": True, "versions": versions, "sizes": sizes, "tool_outcomes": dict(OUTCOMES)}
    except BaseException as e:  # report, do not crash the whole bench
        traceback.print_exc(file=sys.stderr)
        result = {"ok": False, "error": f"{type(e).__name__}: {e}"[:600]}
    print(json.dumps(result, default=HistorySize.as_dict))
