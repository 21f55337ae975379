"""Figure 2: governed Airlock runs per second against the bare baseline (bench.bare).

Both workers live in this process on the same client and server, configured alike; each batch
starts R runs of N steps at once and waits for all of them. Batches alternate between the two
so that drift (a warming server, a busy neighbour) falls on both; the figure is the median of
the rounds. CPU seconds are this process's (worker and driver) and the dev server's. Once the
workers are built, the heap is frozen as the production worker process freezes its own
(`worker.freeze_startup_heap`): full collections, which the busier of the two workloads
triggers, then walk only what runs allocate.
"""

from __future__ import annotations

import asyncio
import gc
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.worker import UnsandboxedWorkflowRunner

from bench.bare import BareRun, bare_job, build_bare_worker
from bench.common import READ, airlock_worker, median, new_id, results_or_stuck, run_input
from contracts.models import RunReport
from worker import freeze_startup_heap


def server_process() -> Any:
    try:
        import psutil
    except ImportError:
        return None
    for child in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if "temporal" in child.name():
                return child
        except psutil.Error:
            continue
    return None


def cpu_seconds(proc: Any) -> float:
    if proc is None:
        return float("nan")
    t = proc.cpu_times()
    return t.user + t.system


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


@asynccontextmanager
async def workers(client: Client, folder: str, **options: Any) -> AsyncIterator[dict[str, str]]:
    """An Airlock worker and a bare one, configured alike, for the length of the block: their task
    queues by kind. `options` go to both."""
    bare_q = new_id("bench-bare")
    async with (
        airlock_worker(client, new_id("bench-air"), **options) as air,
        build_bare_worker(client, bare_q, f"{folder}/bare.db", **options),
    ):
        yield {"airlock": air.task_queue, "bare": bare_q}


def starts(
    client: Client, kind: str, task_queue: str, steps: int, id_prefix: str, count: int
) -> list[Awaitable[WorkflowHandle[Any, Any]]]:
    """`count` starts of `steps`-step runs of one kind, to be awaited together."""
    if kind == "airlock":
        raw = run_input([READ] * steps)
        return [
            client.start_workflow(
                "AgentRun", raw, id=new_id(f"{id_prefix}-air"), task_queue=task_queue, result_type=RunReport
            )
            for _ in range(count)
        ]
    job = bare_job([READ] * steps)
    return [
        client.start_workflow(BareRun.run, args=job, id=new_id(f"{id_prefix}-bare"), task_queue=task_queue)
        for _ in range(count)
    ]


async def _batch(client: Client, kind: str, task_queue: str, runs: int, steps: int) -> dict[str, float]:
    server = server_process()
    c0, s0, t0 = own_cpu(), cpu_seconds(server), time.perf_counter()
    handles = await asyncio.gather(*starts(client, kind, task_queue, steps, "tp", runs))
    results = await results_or_stuck(handles)
    wall = time.perf_counter() - t0
    if kind == "airlock":
        bad = [r for r in results if r.state != "completed"]
        if bad:
            raise RuntimeError(f"{len(bad)} Airlock runs did not complete: {bad[0].reason}")
    return {
        "wall_s": wall,
        "runs_per_s": runs / wall,
        "worker_cpu_s": own_cpu() - c0,
        "server_cpu_s": cpu_seconds(server) - s0,
    }


async def _single(client: Client, kind: str, task_queue: str, steps: int) -> float:
    """Milliseconds per step of one run alone on the worker: a step's latency, not a share of
    a busy worker's time."""
    t0 = time.perf_counter()
    await results_or_stuck(await asyncio.gather(*starts(client, kind, task_queue, steps, "step", 1)))
    return 1000 * (time.perf_counter() - t0) / steps


async def measure(
    client: Client, runs: int, steps: int, rounds: int, single_steps: int = 100, *, sandboxed: bool = True
) -> dict[str, Any]:
    """`sandboxed=False` runs both workflows outside Temporal's workflow sandbox: the difference
    between the two measurements is what the sandbox costs, apart from governance."""
    runner = {} if sandboxed else {"workflow_runner": UnsandboxedWorkflowRunner()}
    with tempfile.TemporaryDirectory(prefix="airlock-bench-") as tmp:
        async with workers(client, tmp, **runner) as queues:
            freeze_startup_heap()
            try:
                # Warm-up: imports, sandbox caches, connections. Not counted.
                for kind in ("bare", "airlock"):
                    await _batch(client, kind, queues[kind], max(2, runs // 10), steps)
                step_ms = {k: await _single(client, k, queues[k], single_steps) for k in ("bare", "airlock")}
                samples: dict[str, list[dict[str, float]]] = {"airlock": [], "bare": []}
                for r in range(rounds):
                    order = ("bare", "airlock") if r % 2 == 0 else ("airlock", "bare")
                    for kind in order:
                        samples[kind].append(await _batch(client, kind, queues[kind], runs, steps))
            finally:
                gc.unfreeze()  # the other sections measure the process as it was
    out: dict[str, Any] = {"runs": runs, "steps": steps, "rounds": rounds, "samples": samples}
    for kind in ("airlock", "bare"):
        out[kind] = {
            "runs_per_s": median([s["runs_per_s"] for s in samples[kind]]),
            "worker_cpu_ms_per_run": median([1000 * s["worker_cpu_s"] / runs for s in samples[kind]]),
            "server_cpu_ms_per_run": median([1000 * s["server_cpu_s"] / runs for s in samples[kind]]),
            "single_run_ms_per_step": step_ms[kind],
        }
    out["single_steps"] = single_steps
    out["ratio"] = out["airlock"]["runs_per_s"] / out["bare"]["runs_per_s"]
    out["round_ratios"] = [
        a["runs_per_s"] / b["runs_per_s"] for a, b in zip(samples["airlock"], samples["bare"], strict=True)
    ]
    return out
