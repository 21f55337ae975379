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

import concurrent.futures
from typing import Any, ClassVar

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic_ai import Agent, DeferredToolRequests
    from pydantic_ai.capabilities import Hooks
    from pydantic_ai.durable_exec.temporal import PydanticAIWorkflow, TemporalDurability
    from pydantic_ai.exceptions import ApprovalRequired, SkipToolExecution
    from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart, UserPromptPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    from bench import peer_tools
    from bench.common import new_id, plan_of

NAME = "pydantic-ai"


def plan_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    prompt = next(
        p.content
        for m in messages
        for p in getattr(m, "parts", [])
        if isinstance(p, UserPromptPart) and isinstance(p.content, str)
    )
    done = sum(1 for m in messages for p in getattr(m, "parts", []) if isinstance(p, ToolReturnPart))
    plan = plan_of(prompt)
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
    __pydantic_ai_agents__: ClassVar[list[Any]] = [agent]

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


async def measure(address: str, n: int) -> dict[str, Any]:
    from pydantic_ai.durable_exec.temporal import PydanticAIPlugin
    from temporalio.client import Client
    from temporalio.worker import Worker

    client = await Client.connect(address, plugins=[PydanticAIPlugin()])
    task_queue = new_id("bench-pai")
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[PydanticAIJob],
        activity_executor=concurrent.futures.ThreadPoolExecutor(max_workers=32),
    ):
        out = await peer_tools.job_sizes(client, PydanticAIJob, task_queue, "pai", n)
    peer_tools.close()
    return out


if __name__ == "__main__":
    peer_tools.main(measure, ("pydantic-ai-slim",))
