"""Shared by the `test_adversarial_*` files: spotting a stuck run, settling a run, and a scripted
OpenAI-compatible server for prompt-injection scenarios.

A run is *stuck* when its workflow task fails: Temporal retries a failed workflow task forever, so
the run looks alive and never moves. Temporal writes every such failure into the history as a
WORKFLOW_TASK_FAILED event, and `describe()` shows the pending task's attempt count climbing.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

import httpx2
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import RawValue, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError

from activities.openai_provider import OpenAIProvider
from contracts.models import FINAL_STATES, RunReport, RunState, Status, TimelineEntry
from contracts.workspace_io import WorkspaceView, control_workflow_id
from runtime.settings import Settings
from tests.conftest import CONTROL_QUEUE, Runs, fake_openai, ready_view

# What a refused vote's reason must look like to "name what is wrong": one of the fixed reasons
# Airlock gives, each naming the payload field, the approval or the person at fault.
VOTE_REASONS = re.compile(
    r"^(malformed payload: .+"
    r"|unknown approval id .+"
    r"|approval \S+ is already decided"
    r"|.+ is not a person in the policy"
    r"|self-approval: .+ requested this run"
    r"|.+ lacks the role this tier needs \(one of: .+\)"
    r"|.+ has already voted on this approval"
    r"|the last approval must come from someone with role \S+"
    r"|unknown signal .+: nothing was counted; .+)$",
    re.S,
)


# --- payloads as an attacker sends them -----------------------------------------------------------

# Encodings a raw message may carry: what Temporal's converters read, what they read into something
# other than a JSON object, and what they cannot read at all.
ENCODINGS = {
    "json/plain": lambda data: Payload(metadata={"encoding": b"json/plain"}, data=data),
    "json/plain (not JSON)": lambda data: Payload(metadata={"encoding": b"json/plain"}, data=b"{not json " + data),
    "binary/plain": lambda data: Payload(metadata={"encoding": b"binary/plain"}, data=data),
    "binary/null": lambda data: Payload(metadata={"encoding": b"binary/null"}),
    "json/protobuf": lambda data: Payload(
        metadata={"encoding": b"json/protobuf", "messageType": b"airlock.NoSuchMessage"}, data=b"{}"
    ),
    "binary/protobuf": lambda data: Payload(
        metadata={"encoding": b"binary/protobuf", "messageType": b"airlock.NoSuchMessage"}, data=b"\x08\x01"
    ),
    "unknown": lambda data: Payload(metadata={"encoding": b"application/x-bogus"}, data=data),
    "no metadata": lambda data: Payload(data=data),
}


def raw(encoding: str, data: bytes = b'{"approval_id": "apr-1-0-0000000000", "approver": "u_bob"}') -> RawValue:
    """A payload with the given encoding, sent as is (no converter touches it on the way)."""
    return RawValue(ENCODINGS[encoding](data))


async def event_types(client: Client, handle: WorkflowHandle[Any, Any]) -> list[EventType.ValueType]:
    """The type of every event of the run's chain, in order."""
    return [
        e.event_type
        for h in await chain_histories(client, handle.id, handle.first_execution_run_id or handle.run_id)
        for e in h.events
    ]


async def chain_histories(client: Client, workflow_id: str, first_run_id: str | None) -> list[Any]:
    """Every history of a run's continue-as-new chain, first to last."""
    histories = []
    run_id = first_run_id
    for _ in range(50):
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        histories.append(history)
        last = history.events[-1] if history.events else None
        if last is None or last.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            break
        run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    return histories


SERVER_TURNED_BACK = {
    WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND,
    WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_FORCE_CLOSE_COMMAND,
}


async def workflow_task_failures(client: Client, handle: WorkflowHandle[Any, Any]) -> list[str]:
    """The cause and message of every failed workflow task in the run's chain (empty when none
    failed). A task the server itself turned back is not a failure of the workflow's code: because
    new signals arrived while it ran (`UNHANDLED_COMMAND`: the workflow tried to finish with
    messages still unread), or because the server closed it to hand the next task over
    (`FORCE_CLOSE_COMMAND`, seen under a flood of signals on a loaded machine). The server hands
    the workflow its messages in the next task; `assert_not_stuck` checks that one is not retrying."""
    failures = []
    for history in await chain_histories(client, handle.id, handle.first_execution_run_id or handle.run_id):
        for event in history.events:
            if event.event_type != EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                continue
            attributes = event.workflow_task_failed_event_attributes
            if attributes.cause in SERVER_TURNED_BACK:
                continue
            failures.append(f"{WorkflowTaskFailedCause.Name(attributes.cause)}: {attributes.failure.message}")
    return failures


async def fresh_control(client: Client, workspace: str) -> WorkflowHandle[Any, Any]:
    """The workspace's control workflow, started afresh on the session's control queue (one
    already running is terminated), once it answers."""
    handle = await client.start_workflow(
        "WorkspaceControl",
        workspace,
        id=control_workflow_id(workspace),
        task_queue=CONTROL_QUEUE,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING,
    )
    await ready_view(handle)
    return handle


async def control_state(control: WorkflowHandle[Any, Any]) -> WorkspaceView:
    """The control workflow's `state` query."""
    result: WorkspaceView = await control.query("state", result_type=WorkspaceView)
    return result


async def assert_not_stuck(client: Client, handle: WorkflowHandle[Any, Any]) -> None:
    """No workflow task of the run ever failed, and none is being retried now."""
    failures = await workflow_task_failures(client, handle)
    assert not failures, f"workflow task failed {len(failures)}x: {failures[:3]}"
    latest = await client.get_workflow_handle(handle.id).describe()
    attempt = latest.raw_description.pending_workflow_task.attempt
    assert attempt <= 1, f"workflow task is on attempt {attempt}"


async def settle(runs: Runs, handle: WorkflowHandle[Any, Any], timeout: float = 15.0) -> Status:
    """Waits until the run is in a final state or cleanly waiting for a person: an approval with
    its pending call listed, or a pause."""
    return await runs.wait_for(
        handle,
        lambda s: (
            s.state in FINAL_STATES
            or s.state is RunState.PAUSED
            or (s.state is RunState.AWAITING_APPROVAL and bool(s.pending_approvals))
        ),
        timeout=timeout,
    )


async def outcome(handle: WorkflowHandle[Any, RunReport], timeout: float = 15.0) -> RunReport | ApplicationError:
    """The run's report, or the non-retryable error it failed with; anything else fails the test."""
    try:
        return await asyncio.wait_for(handle.result(), timeout)
    except WorkflowFailureError as failure:
        cause = failure.cause
        assert isinstance(cause, ApplicationError), f"failed with {type(cause).__name__}: {cause}"
        assert cause.non_retryable, f"retryable failure: {cause.message}"
        return cause


async def timeline(handle: WorkflowHandle[Any, Any]) -> list[TimelineEntry]:
    return await handle.query("timeline", result_type=list[TimelineEntry])


# --- a scripted OpenAI-compatible server ---------------------------------------------------------


def completion(
    *, tool_calls: list[tuple[str, str, dict[str, Any]]] | None = None, content: str | None = None
) -> dict[str, Any]:
    """A Chat Completions response body: tool calls `(id, function name, arguments)` or an answer."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
            for cid, name, args in tool_calls
        ]
    return {
        "id": "chatcmpl-adversarial",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls" if tool_calls else "stop"}
        ],
        "usage": {"prompt_tokens": 300, "completion_tokens": 20, "total_tokens": 320},
    }


class ScriptedOpenAI:
    """Answers the n-th Chat Completions request with the n-th response, and keeps every request
    body so the test can check afterwards what the model was shown. It never raises inside the
    transport (that would become a retried model call), it only records."""

    def __init__(self, responses: list[dict[str, Any]] | Callable[[int, dict[str, Any]], dict[str, Any]]) -> None:
        self._responses = responses
        self.requests: list[dict[str, Any]] = []

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content) if request.content else {}
        self.requests.append(body)
        index = len(self.requests) - 1
        if callable(self._responses):
            return httpx2.Response(200, json=self._responses(index, body))
        if index >= len(self._responses):
            return httpx2.Response(200, json=completion(content="(no more scripted responses)"))
        return httpx2.Response(200, json=self._responses[index])

    def provider(self, settings: Settings) -> OpenAIProvider:
        return fake_openai(settings, self.handle)
