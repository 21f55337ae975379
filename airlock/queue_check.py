"""Whether some worker serves the task queue a workflow runs on, before the CLI waits on it.

A workspace's control workflow lives on the queue of the worker that started it. Once no worker
polls that queue (a retired pool, a mistyped `AIRLOCK_TASK_QUEUE`), an update to it waits for a
worker that never comes: `airlock workspace pause` would hang, in the moment it matters most.
The server knows who has polled a queue lately, so the CLI asks it first and says so at once.
"""

from __future__ import annotations

from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode


async def queue_of(client: Client, workflow_id: str) -> tuple[str, bool] | None:
    """The task queue the workflow runs (or ran) on and whether it still runs; None when there is
    no such workflow. Queries go to that queue either way; an update to one that has ended
    starts a new one wherever the caller starts it."""
    try:
        described = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as e:
        if e.status is not RPCStatusCode.NOT_FOUND:
            raise
        return None
    return described.task_queue, described.status is WorkflowExecutionStatus.RUNNING


async def served(client: Client, task_queue: str) -> bool:
    """Whether a worker has polled the queue for workflow tasks lately (the server keeps the
    pollers of the last few minutes)."""
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return bool(response.pollers)
