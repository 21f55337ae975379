"""Figure 1 for Pydantic AI on Temporal (`pydantic_ai.durable_exec.temporal`).

Run as a child process by `bench.run` (`python -m bench.peer_pydantic_ai --address HOST:PORT
--n N`); prints one JSON line with the history sizes.

The job, in Pydantic AI's own terms (an `Agent` with the `TemporalDurability` capability, whose
model requests and tool calls run as Temporal activities):
- allowed read: a function tool;
- approved write: the refund tool, deferred for approval. A `Hooks` capability raises
  `ApprovalRequired` in `before_tool_execute`; the run ends with `DeferredToolRequests`, the
  workflow waits for an `approve` signal and runs the agent again with the message history and
  `DeferredToolResults`, and the tool executes;
- denied call: the same hook raises `SkipToolExecution` with the reason for a refund above
  200 USD; the tool does not run and the model gets the reason. The hook runs in workflow code.
There is no preview step: nothing computes a diff before approval.
The model is a `FunctionModel` that answers from the conversation it is given.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import sys
import time
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic_ai import Agent, DeferredToolRequests
    from pydantic_ai.capabilities import Hooks
    from pydantic_ai.durable_exec.temporal import PydanticAIWorkflow, TemporalDurability
    from pydantic_ai.exceptions import ApprovalRequired, SkipToolExecution
    from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart, UserPromptPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    from bench import peer_tools

NAME = "pydantic-ai"


def plan_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    prompt = next(
        p.content
        for m in messages
        for p in getattr(m, "parts", [])
        if isinstance(p, UserPromptPart) and isinstance(p.content, str)
    )
    done = sum(1 for m in messages for p in getattr(m, "parts", []) if isinstance(p, ToolReturnPart))
    plan = peer_tools.plan_of(prompt)
    if done >= len(plan):
        return ModelResponse(parts=[TextPart("done")])
    tool, args = peer_tools.CALL_ARGS[plan[done]]
    return ModelResponse(parts=[ToolCallPart(tool_name=tool, args=args, tool_call_id=f"call_{done}")])


async def get_order(order_id: str) -> dict[str, Any]:
    """An order with its customer, items and what is left refundable."""
    return peer_tools.run_tool("orders.get_order", {"order_id": order_id})


async def create_refund(order_id: str, amount_usd: float, reason: str) -> dict[str, Any]:
    """Refund part or all of an order."""
    return peer_tools.run_tool(
        "payments.create_refund", {"order_id": order_id, "amount_usd": amount_usd, "reason": reason}
    )


async def refund_policy(ctx: Any, *, call: Any, tool_def: Any, args: Any) -> Any:
    if call.tool_name != "create_refund":
        return args
    amount = float((args or {}).get("amount_usd", 0)) if isinstance(args, dict) else 0.0
    if amount > peer_tools.REFUND_LIMIT_USD:
        raise SkipToolExecution(f"denied: {peer_tools.DENIAL}")
    if not ctx.tool_call_approved:
        raise ApprovalRequired()
    return args


agent = Agent(
    FunctionModel(plan_model),
    name="support",
    instructions="Handle the refund request.",
    tools=[get_order, create_refund],
    output_type=[str, DeferredToolRequests],
    capabilities=[TemporalDurability(), Hooks(before_tool_execute=refund_policy)],
)


@workflow.defn(name="PydanticAIJob")
class PydanticAIJob(PydanticAIWorkflow):
    __pydantic_ai_agents__ = [agent]

    def __init__(self) -> None:
        self.approved: set[str] = set()
        self.pending: list[str] = []

    @workflow.signal
    def approve(self, call_id: str) -> None:
        self.approved.add(call_id)

    @workflow.query
    def pending_approvals(self) -> list[str]:
        return list(self.pending)

    @workflow.run
    async def run(self, prompt: str) -> str:
        result = await agent.run(prompt)
        while isinstance(result.output, DeferredToolRequests):
            requests = result.output
            for call in requests.approvals:
                call_id = call.tool_call_id
                self.pending.append(call_id)
                await workflow.wait_condition(lambda c=call_id: c in self.approved)
                self.pending.remove(call_id)
            result = await agent.run(
                message_history=result.all_messages(),
                deferred_tool_results=requests.build_results(approve_all=True),
            )
        return str(result.output)


# ---- the driver (child process) --------------------------------------------------------------


async def _drive(client: Any, task_queue: str, prompt: str, approvals: int) -> Any:
    from bench.common import history_size, new_id, result_or_stuck

    handle = await client.start_workflow(PydanticAIJob.run, prompt, id=new_id("pai"), task_queue=task_queue)
    seen: set[str] = set()
    deadline = time.monotonic() + 120
    while len(seen) < approvals:
        for call_id in await handle.query(PydanticAIJob.pending_approvals):
            if call_id not in seen:
                seen.add(call_id)
                await handle.signal(PydanticAIJob.approve, call_id)
        if time.monotonic() > deadline:
            raise TimeoutError("no approval request came up")
        await asyncio.sleep(0.01)
    await result_or_stuck(handle)
    return await history_size(client, handle.id)


async def measure(address: str, n: int) -> dict[str, Any]:
    from pydantic_ai.durable_exec.temporal import PydanticAIPlugin
    from temporalio.client import Client
    from temporalio.worker import Worker

    from bench.common import new_id

    client = await Client.connect(address, plugins=[PydanticAIPlugin()])
    task_queue = new_id("bench-pai")
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[PydanticAIJob],
        activity_executor=concurrent.futures.ThreadPoolExecutor(max_workers=32),
    ):
        out: dict[str, Any] = {}
        base = await _drive(client, task_queue, "plan:read:0", 0)
        for kind in ("read", "write", "denied"):
            sizes = []
            for k in (n, 2 * n):
                sizes.append(await _drive(client, task_queue, f"plan:{kind}:{k}", k if kind == "write" else 0))
            out[kind] = {"base": base.as_dict(), "n": sizes[0].as_dict(), "2n": sizes[1].as_dict()}
        job = await _drive(client, task_queue, "plan:job:3", 1)
        out["job"] = {"size": job.as_dict(), "base": base.as_dict()}
    peer_tools.close()
    return out


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("pydantic-ai-slim",)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--n", type=int, default=10)
    a = parser.parse_args()
    try:
        sizes = asyncio.run(measure(a.address, a.n))
        result = {"ok": True, "versions": versions(), "sizes": sizes, "tool_outcomes": dict(peer_tools.OUTCOMES)}
    except BaseException as e:  # report, do not crash the whole bench
        import traceback

        traceback.print_exc(file=sys.stderr)
        result = {"ok": False, "error": f"{type(e).__name__}: {e}"[:600]}
    print(json.dumps(result))
