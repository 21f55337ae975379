"""An Airlock worker in its own process, for figure 5 (memory and CPU of a worker alone).

`python -m bench.worker_proc --address HOST:PORT --task-queue Q --db PATH --max-cached N
--exec-log FILE` builds the worker with `worker.build_worker`, sets the workflow cache size
through a client plugin, prints READY once it polls, and runs until SIGTERM. Each start of the
refund tool is appended to FILE as `workflow_id step unix_time`, so the driver can time
approvals across processes.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time

from temporalio.client import Client

from bench.common import ToolStartTap, refund_activity, with_worker_settings
from runtime.converter import data_converter
from runtime.logging import configure_logging
from runtime.settings import Settings
from worker import build_worker


def exec_log_tap(path: str) -> ToolStartTap:
    """Appends `workflow_id step unix_time` to `path` as each refund starts (wall clock: the
    driver that reads it is another process)."""
    file = open(path, "a", buffering=1)  # noqa: SIM115 - open for the process's life

    def started(workflow_id: str, step: int) -> None:
        file.write(f"{workflow_id} {step} {time.time():.6f}\n")

    return ToolStartTap(refund_activity(), started)


async def main(a: argparse.Namespace) -> None:
    configure_logging("WARNING")
    client = await Client.connect(a.address, data_converter=data_converter)
    # Only the cache size differs from `worker.build_worker`'s configuration.
    client = with_worker_settings(client, max_cached_workflows=a.max_cached)
    settings = Settings(db=a.db, task_queue=a.task_queue)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with build_worker(client, settings, extra_interceptors=[exec_log_tap(a.exec_log)]):
        print("READY", flush=True)
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--max-cached", type=int, default=1000)
    parser.add_argument("--exec-log", required=True)
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
