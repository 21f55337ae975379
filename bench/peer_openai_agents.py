"""Figure 1 for the OpenAI Agents SDK on Temporal (`temporalio.contrib.openai_agents`).

Run as a child process by `bench.run` (`python -m bench.peer_openai_agents --address HOST:PORT
--n N`); prints one JSON line with the history sizes. A child process keeps the SDK's global
set-up (model provider, tracing) away from the other measurements.

The job, in the SDK's own terms:
- allowed read: a function tool made from a Temporal activity (`activity_as_tool`);
- approved write: the same for the refund, with `needs_approval`: the run is interrupted, the
  workflow waits for an `approve` signal, approves the item on the `RunState` and resumes;
- denied call: the refund tool's input guardrail (`tool_input_guardrail`) rejects a refund above
  200 USD and tells the model why; the tool does not run. The guardrail runs in workflow code.
There is no preview step: the SDK has nothing that computes a diff before approval.
The model is the integration's `TestModel`, answering from the conversation it is given.
"""

from __future__ import annotations

import concurrent.futures
import json
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from agents import Agent, Runner
    from agents.tool_guardrails import (
        ToolGuardrailFunctionOutput,
        ToolInputGuardrailData,
        tool_input_guardrail,
    )
    from temporalio.contrib.openai_agents.workflow import activity_as_tool

    from bench import peer_tools
    from bench.common import new_id, plan_of

NAME = "openai-agents"
TOOL_TIMEOUT = timedelta(seconds=30)


@activity.defn(name="get_order")
def get_order(order_id: str) -> dict[str, Any]:
    """An order with its customer, items and what is left refundable."""
    return peer_tools.run_tool("orders.get_order", {"order_id": order_id})


@activity.defn(name="create_refund")
def create_refund(order_id: str, amount_usd: float, reason: str) -> dict[str, Any]:
    """Refund part or all of an order."""
    return peer_tools.run_tool(
        "payments.create_refund", {"order_id": order_id, "amount_usd": amount_usd, "reason": reason}
    )


def _amount(arguments: Any) -> float:
    args = json.loads(arguments) if isinstance(arguments, str) else dict(arguments or {})
    try:
        return float(args.get("amount_usd", 0))
    except (TypeError, ValueError):
        return float("inf")


@tool_input_guardrail
def refund_limit(data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
    if _amount(data.context.tool_arguments) > peer_tools.REFUND_LIMIT_USD:
        return ToolGuardrailFunctionOutput.reject_content(peer_tools.DENIAL)
    return ToolGuardrailFunctionOutput.allow()


async def needs_approval(_ctx: Any, params: dict[str, Any], _call_id: str) -> bool:
    # A refund the guardrail will refuse is not put in front of a person first.
    return _amount(params) <= peer_tools.REFUND_LIMIT_USD


def _tools() -> list[Any]:
    read = activity_as_tool(get_order, start_to_close_timeout=TOOL_TIMEOUT)
    write = activity_as_tool(create_refund, start_to_close_timeout=TOOL_TIMEOUT)
    write.needs_approval = needs_approval
    write.tool_input_guardrails = [refund_limit]
    return [read, write]


@workflow.defn(name="OpenAIAgentsJob")
class OpenAIAgentsJob:
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
        agent = Agent(name="support", instructions="Handle the refund request.", tools=_tools())
        result = await Runner.run(agent, prompt, max_turns=10_000)
        while result.interruptions:
            state = result.to_state()
            for item in result.interruptions:
                call_id = item.raw_item.call_id  # type: ignore[union-attr]
                self.pending.append(call_id)
                await workflow.wait_condition(lambda c=call_id: c in self.approved)
                self.pending.remove(call_id)
                state.approve(item)
            result = await Runner.run(agent, state, max_turns=10_000)
        return str(result.final_output)


# ---- the driver (child process) --------------------------------------------------------------


def _make_model() -> Any:
    from temporalio.contrib.openai_agents.testing import ResponseBuilders, TestModel

    class PlanModel(TestModel):
        """The integration's TestModel, answering from the conversation: the next planned call,
        or the final answer once every planned call has its output."""

        def __init__(self) -> None:
            super().__init__(lambda: ResponseBuilders.output_message("unused"))

        async def get_response(self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any) -> Any:
            items = [{"role": "user", "content": input}] if isinstance(input, str) else list(input)
            prompt = next(i.get("content") for i in items if isinstance(i, dict) and i.get("role") == "user")
            done = sum(1 for i in items if isinstance(i, dict) and i.get("type") == "function_call_output")
            plan = plan_of(prompt)
            if done >= len(plan):
                return ResponseBuilders.output_message("done")
            tool, call_args = peer_tools.CALL_ARGS[plan[done]]
            return ResponseBuilders.tool_call(json.dumps(call_args), tool, call_id=f"call_{done}", item_id=f"fc_{done}")

    return PlanModel()


async def measure(address: str, n: int) -> dict[str, Any]:
    from temporalio.client import Client
    from temporalio.contrib.openai_agents.testing import AgentEnvironment
    from temporalio.worker import Worker

    base_client = await Client.connect(address)
    async with AgentEnvironment(model=_make_model()) as env:
        client = env.applied_on_client(base_client)
        task_queue = new_id("bench-oa")
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[OpenAIAgentsJob],
            activities=[get_order, create_refund],
            activity_executor=concurrent.futures.ThreadPoolExecutor(max_workers=32),
        ):
            out = await peer_tools.job_sizes(client, OpenAIAgentsJob, task_queue, "oa", n)
    peer_tools.close()
    return out


if __name__ == "__main__":
    peer_tools.main(measure, ("openai-agents", "temporalio-openai-agents"))
