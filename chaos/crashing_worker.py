"""A real Airlock worker that dies by SIGKILL at a chosen point of a write's life, before the
workflow task that reached it is reported back. Run as a subprocess by the crash suites.

    python -m chaos.crashing_worker --die-after-writes N
    python -m chaos.crashing_worker --die-at after-commit [--tool payments.create_refund]

`--die-after-writes N` dies right after the N-th committed write (the worst moment for exactly
once). `--die-at` dies once, at one point of a write's life:

- `after-prepare`: the write's preparation (validation, preview) returned;
- `after-decision`: the policy allowed the write and its execution is about to start;
- `after-commit`: the write and its ledger row committed, the result not reported.

(A kill during an approval wait needs no hook: the suite kills the worker by its PID.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from typing import Any, Literal

from temporalio import activity
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from runtime.settings import Settings
from worker import build_worker, connect_client

WRITES = ("tool.payments.create_refund", "tool.crm.update_customer", "tool.tickets.update_ticket")

DiePoint = Literal["after-prepare", "after-decision", "after-commit"]
DIE_POINTS: tuple[DiePoint, ...] = ("after-prepare", "after-decision", "after-commit")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


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
                        _die()
                return result

        return _Inbound(next)


class DieAt(Interceptor):
    """Dies at `point` of the first call of `tool` that gets there."""

    def __init__(self, point: DiePoint, tool: str) -> None:
        self.point = point
        self.tool = tool

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        outer = self

        class _Inbound(ActivityInboundInterceptor):
            async def execute_activity(self, input: ExecuteActivityInput) -> Any:
                kind = activity.info().activity_type
                if outer.point == "after-decision" and kind == f"tool.{outer.tool}":
                    _die()
                result = await self.next.execute_activity(input)
                if (outer.point == "after-prepare" and kind == f"tool.{outer.tool}.prepare") or (
                    outer.point == "after-commit" and kind == f"tool.{outer.tool}"
                ):
                    _die()
                return result

        return _Inbound(next)


async def main(interceptor: Interceptor) -> None:
    settings = Settings()
    client = await connect_client(settings)
    async with build_worker(client, settings, extra_interceptors=[interceptor]):
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--die-after-writes", type=int, default=1)
    parser.add_argument("--die-at", choices=DIE_POINTS)
    parser.add_argument("--tool", default="payments.create_refund")
    args = parser.parse_args()
    chosen: Interceptor = DieAt(args.die_at, args.tool) if args.die_at else DieAfterWrites(args.die_after_writes)
    asyncio.run(main(chosen))
