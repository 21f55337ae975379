"""Figure 5: many runs waiting for approval, and what they cost a worker that has them.

For each workflow cache size, a fresh worker process (bench.worker_proc) takes R runs that each
stop at an approval. Then, from outside the process: its RSS before and after, and its CPU
seconds (and the dev server's) over an idle interval while all R wait. Last, K of the waiting
runs are approved one by one: signal sent -> refund activity started, as recorded by the
worker's activity interceptor (wall clock, same machine). With a small cache most of them were
evicted, so this includes rebuilding the run from its history (replay).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from temporalio.client import Client

from bench.common import (
    APPROVER,
    ROOT,
    WRITE,
    count_waiting,
    new_id,
    pending_approval,
    percentile,
    run_input,
    server_address,
    stuck_reason,
)
from bench.throughput import cpu_seconds, server_process


def _proc(pid: int) -> Any:
    try:
        import psutil

        return psutil.Process(pid)
    except ImportError:
        return None


def rss_bytes(pid: int) -> int:
    p = _proc(pid)
    if p is not None:
        return int(p.memory_info().rss)
    with open(f"/proc/{pid}/status") as f:  # no psutil: Linux's own account
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return -1


def proc_cpu_seconds(pid: int) -> float:
    p = _proc(pid)
    if p is not None:
        return cpu_seconds(p)
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


async def _idle_cpu(pid: int, seconds: float) -> tuple[float, float]:
    server = server_process()
    w0, s0 = proc_cpu_seconds(pid), cpu_seconds(server)
    await asyncio.sleep(seconds)
    return proc_cpu_seconds(pid) - w0, cpu_seconds(server) - s0


BATCH = 100
STALL_S = 60.0


async def _start_and_wait(client: Client, task_queue: str, runs: int) -> tuple[list[Any], int, str | None]:
    """Starts the runs in batches of BATCH, each once the one before waits for approval (so the
    worker is not flooded with first workflow tasks at once). Returns the handles, how many wait,
    and why not all of them do (no progress for STALL_S seconds), if so."""
    raw = run_input([WRITE])
    handles: list[Any] = []
    count, last_change, last_count = 0, time.monotonic(), -1
    while True:
        if count >= len(handles) and len(handles) < runs:
            handles += await asyncio.gather(
                *(
                    client.start_workflow("AgentRun", raw, id=new_id("idle"), task_queue=task_queue)
                    for _ in range(min(BATCH, runs - len(handles)))
                )
            )
        count = await count_waiting(client, task_queue)
        if count >= runs:
            return handles, count, None
        if count != last_count:
            last_count, last_change = count, time.monotonic()
        elif time.monotonic() - last_change > STALL_S:
            reason = await stuck_reason(handles[-1])
            note = (
                f"only {count} of {len(handles)} started runs reached awaiting_approval; no progress for {STALL_S:.0f}s"
            )
            if reason:
                note += f" ({reason})"
            return handles, count, note[:700] + "; the worker process's own log lines are in the log file"
        await asyncio.sleep(0.5)


async def _one_config(
    client: Client, tmp: str, runs: int, cache: int, idle_s: float, approve: int, log: TextIO
) -> dict[str, Any]:
    task_queue = new_id(f"bench-idle-{cache}")
    exec_log = Path(tmp) / f"exec-{cache}.log"
    exec_log.touch()
    cmd = [
        sys.executable, "-m", "bench.worker_proc",
        "--address", server_address(client),
        "--task-queue", task_queue,
        "--db", f"{tmp}/backoffice-{cache}.db",
        "--max-cached", str(cache),
        "--exec-log", str(exec_log),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        ready = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout=60)
        if "READY" not in ready:
            raise RuntimeError(f"worker process did not start (exit {proc.poll()}); see the log")
        await asyncio.sleep(1.0)
        rss_before = rss_bytes(proc.pid)
        idle_empty = await _idle_cpu(proc.pid, idle_s)

        started = time.monotonic()
        handles, waiting, stalled = await _start_and_wait(client, task_queue, runs)
        reach_s = time.monotonic() - started
        await asyncio.sleep(2.0)  # let the last tasks finish and the cache settle
        rss_waiting = rss_bytes(proc.pid)
        idle_loaded = await _idle_cpu(proc.pid, idle_s)

        # Approve K of them, one at a time, oldest first (with a small cache: long evicted).
        sends: dict[str, float] = {}
        for handle in handles[:approve]:
            try:
                approval_id = await pending_approval(handle, set(), timeout=20.0)
            except TimeoutError:
                continue  # a run that never reached its approval (see "stalled")
            sends[handle.id] = time.time()
            await handle.signal("approve", {"approval_id": approval_id, "approver": APPROVER})
        deadline = time.monotonic() + 60
        starts: dict[str, float] = {}
        while len(starts) < len(sends) and time.monotonic() < deadline:
            for line in exec_log.read_text().splitlines():
                wf, _step, t = line.split()
                starts.setdefault(wf, float(t))
            await asyncio.sleep(0.2)
        lat = [1000 * (starts[w] - sends[w]) for w in sends if w in starts]
        rss_after = rss_bytes(proc.pid)
        return {
            "cache": cache,
            "runs": waiting,
            "runs_started": len(handles),
            "stalled": stalled,
            "reach_waiting_s": reach_s,
            "rss_before_mb": rss_before / 2**20,
            "rss_waiting_mb": rss_waiting / 2**20,
            "rss_after_approvals_mb": rss_after / 2**20,
            "rss_per_waiting_run_kb": (rss_waiting - rss_before) / 1024 / max(1, waiting),
            "idle_s": idle_s,
            "worker_cpu_idle_empty_s": idle_empty[0],
            "worker_cpu_idle_waiting_s": idle_loaded[0],
            "server_cpu_idle_waiting_s": idle_loaded[1],
            "approvals": len(lat),
            "approve_p50_ms": percentile(lat, 50),
            "approve_p99_ms": percentile(lat, 99),
        }
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout=45)
            except TimeoutError:
                proc.kill()
                proc.wait()


async def measure(
    client: Client, runs: int, caches: list[int], idle_s: float, approve: int, log: TextIO
) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="airlock-bench-") as tmp:
        return [await _one_config(client, tmp, runs, cache, idle_s, approve, log) for cache in caches]
