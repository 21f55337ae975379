"""A real Airlock worker that dies by SIGKILL right after a write commits, before the activity
reports back: the worst moment for exactly-once. Run as a subprocess by the crash suite.

    python -m chaos.crashing_worker --die-after-writes N
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from typing import Any

from temporalio import activity
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from airlock.settings import Settings
from worker import build_worker, connect_client

WRITES = ("tool.payments.create_refund", "tool.crm.update_customer", "tool.tickets.update_ticket")


class DieAfterWrites(Interceptor):
    def __init__(self, writes: int) -> None:
        self.left = writes

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        outer = self

        class _Inbound(ActivityInboundInterceptor):
            async def execute_activity(self, input: ExecuteActivityInput) -> Any:
                result = await self.next.execute_activity(input)
                if activity.info().activity_type in WRITES:
                    outer.left -= 1
                    if outer.left <= 0:
                        # The write and its ledger row are committed; the result is not reported.
                        os.kill(os.getpid(), signal.SIGKILL)
                return result

        return _Inbound(next)


async def main(writes: int) -> None:
    settings = Settings()
    client = await connect_client(settings)
    async with build_worker(client, settings, extra_interceptors=[DieAfterWrites(writes)]):
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--die-after-writes", type=int, default=1)
    asyncio.run(main(parser.parse_args().die_after_writes))
