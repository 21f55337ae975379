"""The run's side of the workspace control plane.

The join (inside the run's `run.start` local activity, or `workspace.join` for runs started
before it) and, under a concurrency cap, `workspace.register` (a full activity): a starting run
joins its workspace's control workflow (starting it on first use, with a signal) and learns its
admission: the switches in force, and under a cap whether it may run at all.
`workspace.reserve`: a run holds the estimated cost of its next paid model call against the
workspace's daily spend cap.

Without a concurrency cap the join costs the control workflow a share of one signal and no reply:
the run reads the switches from the control workflow's memo first and says which generation it
read; the control workflow, handling registrations and switches one at a time, tells it of any
newer one. Joins that arrive while a registration is on its way go together in the next one
(group commit), and during a burst of starts a registration waits a moment for company: a burst
costs the control workflow a few signals, not one per run, and a lone run waits for nothing.
Under a cap, admission is the control workflow's decision, read back with the `admission` query.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle, WorkflowQueryFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.control_store import StaleGeneration, SwitchGate
from contracts import errors, names
from contracts.workspace_io import (
    SWITCHES_MEMO,
    Admission,
    RegisterBatch,
    RegisterRequest,
    ReserveRequest,
    ReserveResult,
    StoredSwitches,
    StoreSwitches,
    Switches,
    control_workflow_id,
    registration_key,
)

# The most registrations one signal carries; a larger burst goes out in several.
BATCH = 200
# A registration that follows another to the same control workflow within BURST_S waits LINGER_S
# for the joins behind it. Starts in a burst reach their join about 10 ms apart (each run's first
# workflow task comes first), and a registration takes a few ms: without the wait, a burst of 130
# runs went out in 82 registrations, 51 of them of a single run.
BURST_S = 1.0
LINGER_S = 0.05

# How long a `leave` waits for the server to confirm that the run has ended.
CLOSE_WAIT_S = 30.0

Destination = tuple[str, str]  # (workspace, the control workflow's task queue)


class GroupRegistration:
    """Sends registrations to control workflows, several runs' at a time.

    While one registration of a workspace is on its way, joins of that workspace wait and then go
    together in the next; one that follows another within `burst_s` first waits `linger_s` for
    more. Each run's join returns only once its own registration is recorded in the control
    workflow's history.
    """

    def __init__(
        self,
        send: Callable[[Destination, list[RegisterRequest]], Awaitable[Switches]],
        *,
        linger_s: float = LINGER_S,
        burst_s: float = BURST_S,
    ) -> None:
        self._send = send
        self._linger_s = linger_s
        self._burst_s = burst_s
        self._waiting: dict[Destination, list[tuple[RegisterRequest, asyncio.Future[Switches]]]] = {}
        self._draining: dict[Destination, asyncio.Task[None]] = {}
        self._last_sent: dict[Destination, float] = {}

    async def join(self, to: Destination, request: RegisterRequest) -> Switches:
        joined: asyncio.Future[Switches] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(to, []).append((request, joined))
        if to not in self._draining:
            self._draining[to] = asyncio.create_task(self._drain(to))
        return await joined

    async def _drain(self, to: Destination) -> None:
        try:
            while self._waiting.get(to):
                if time.monotonic() - self._last_sent.get(to, float("-inf")) < self._burst_s:
                    await asyncio.sleep(self._linger_s)
                if not (batch := self._next_batch(to)):
                    break
                self._last_sent[to] = time.monotonic()
                try:
                    switches = await self._send(to, [request for request, _ in batch])
                except Exception as e:
                    for _, joined in batch:
                        if not joined.done():
                            joined.set_exception(e)
                else:
                    for _, joined in batch:
                        if not joined.done():
                            joined.set_result(switches)
        finally:
            del self._draining[to]

    def _next_batch(self, to: Destination) -> list[tuple[RegisterRequest, asyncio.Future[Switches]]]:
        # A join whose activity was cancelled meanwhile is not sent.
        waiting = [(r, j) for r, j in self._waiting.pop(to, []) if not j.done()]
        if len(waiting) > BATCH:
            self._waiting[to] = waiting[BATCH:]
        return waiting[:BATCH]


class WorkspaceActivities:
    def __init__(self, client: Client, control_task_queue: str | None = None, gate: SwitchGate | None = None) -> None:
        self._client = client
        self._task_queue = control_task_queue
        self._gate = gate
        self._registrations = GroupRegistration(self._register_batch)

    @activity.defn(name=names.WORKSPACE_SWITCHES)
    def switches(self, workspace: str) -> Switches:
        """The workspace's switches as the control store holds them now: how a run verifies a
        message that would loosen what it obeys, and how a control workflow that starts afresh
        learns the switches in force. Raises while the store cannot be read; the caller retries."""
        return self._store_gate().switches(workspace, fresh=True)

    @activity.defn(name=names.WORKSPACE_STORE_SWITCHES)
    def store_switches(self, request: StoreSwitches) -> StoredSwitches:
        """Commits an accepted switch change before anyone is told of it."""
        gate = self._store_gate()
        try:
            stored = gate.store.write(request.workspace, request.switches)
        except StaleGeneration as e:
            return StoredSwitches(committed=False, switches=e.stored)
        gate.switches(request.workspace, fresh=True)
        return StoredSwitches(committed=True, switches=stored)

    @activity.defn(name=names.WORKSPACE_CLOSED_RUNS)
    async def closed_runs(self, run_ids: list[str]) -> list[str]:
        """Those of these runs that the server says have ended, waiting up to CLOSE_WAIT_S for
        them: a run's word that it has ended (`leave`, sent just before it closes) is taken only
        once the server confirms it."""
        pending = list(dict.fromkeys(run_ids[:BATCH]))
        closed: list[str] = []
        deadline = time.monotonic() + CLOSE_WAIT_S
        while pending:
            still: list[str] = []
            for run_id in pending:
                (closed if await self._has_ended(run_id) else still).append(run_id)
            pending = still
            if not pending or time.monotonic() > deadline:
                break
            activity.heartbeat(len(closed))
            await asyncio.sleep(0.2)
        return closed

    async def _has_ended(self, run_id: str) -> bool:
        try:
            described = await self._client.get_workflow_handle(run_id).describe()
        except RPCError as e:
            if e.status is not RPCStatusCode.NOT_FOUND:
                raise
            return True
        return described.status is not WorkflowExecutionStatus.RUNNING

    def _store_gate(self) -> SwitchGate:
        if self._gate is None:
            raise ApplicationError("this worker has no control store configured", type=errors.CONTROL_STORE_MISSING)
        return self._gate

    @activity.defn(name=names.WORKSPACE_JOIN)
    async def join(self, request: RegisterRequest) -> Admission:
        # Runs join under a cap with `workspace.register`, as a full activity; a join of a run
        # started before `capped-join-by-activity` may still arrive here with one.
        if request.max_concurrent_runs is not None:
            return await self.register(request)
        switches = await self._registrations.join(self._destination(request.workspace), request)
        return Admission(**switches.model_dump())

    @activity.defn(name=names.WORKSPACE_REGISTER)
    async def register(self, request: RegisterRequest) -> Admission:
        """Registers one run and reads its admission back: the join under a concurrency cap, and
        the whole join of runs started before `workspace.join`, which ran this as a full activity."""
        handle = await self._start_control(
            self._destination(request.workspace), names.ControlMessages.REGISTER, request
        )
        return await self._admission(handle, request)

    def _destination(self, workspace: str) -> Destination:
        return (workspace, self._task_queue or activity.info().task_queue)

    async def _register_batch(self, to: Destination, requests: list[RegisterRequest]) -> Switches:
        """Reads the published switches, then registers the runs saying which generation they read."""
        switches = await self._published_switches(to[0])
        read = [r.model_copy(update={"read_generation": switches.generation}) for r in requests]
        await self._start_control(to, names.ControlMessages.REGISTER_BATCH, RegisterBatch(registrations=read))
        return switches

    async def _start_control(self, to: Destination, signal: str, payload: Any) -> WorkflowHandle[Any, Any]:
        workspace, task_queue = to
        return await self._client.start_workflow(
            "WorkspaceControl",
            workspace,
            id=control_workflow_id(workspace),
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal=signal,
            start_signal_args=[payload],
        )

    async def _published_switches(self, workspace: str) -> Switches:
        """The switches in force: as the control store holds them (read on a worker thread), or,
        on a worker without a store, as the control workflow's memo shows them."""
        if self._gate is not None:
            return await asyncio.to_thread(self._gate.switches, workspace, fresh=True)
        try:
            description = await self._client.get_workflow_handle(control_workflow_id(workspace)).describe()
        except RPCError as e:
            if e.status is RPCStatusCode.NOT_FOUND:
                return Switches()
            raise
        if description.status is not WorkflowExecutionStatus.RUNNING:
            return Switches()
        switches: Switches = await description.memo_value(SWITCHES_MEMO, Switches(), type_hint=Switches)
        return switches

    async def _admission(self, handle: WorkflowHandle[Any, Any], request: RegisterRequest) -> Admission:
        key = registration_key(request.run_id, request.chain_run_id)
        # Asked until answered: a control workflow on its first task has not pinned its policy
        # yet; an admission under a cap may wait on a visibility check; a queue whose worker has
        # only just started polling is refused ("no poller seen"); a busy workflow may not buffer
        # another query for a moment. The last try raises whatever it meets.
        for attempt in range(50):
            try:
                admission: Admission = await handle.query(names.ControlMessages.ADMISSION, key, result_type=Admission)
                return admission
            except WorkflowQueryFailedError:
                pass
            except RPCError as e:
                if e.status not in (RPCStatusCode.FAILED_PRECONDITION, RPCStatusCode.RESOURCE_EXHAUSTED):
                    raise
            await asyncio.sleep(min(0.05 * (attempt + 1), 0.5))
        last: Admission = await handle.query(names.ControlMessages.ADMISSION, key, result_type=Admission)
        return last

    @activity.defn(name=names.WORKSPACE_RESERVE)
    async def reserve(self, request: ReserveRequest) -> ReserveResult:
        # Retried by the activity's policy when refused as not ready or over the server's limit
        # of in-flight updates; a retry after the update was applied is granted again, held once.
        result: ReserveResult = await self._client.get_workflow_handle(
            control_workflow_id(request.workspace)
        ).execute_update(names.ControlMessages.RESERVE, request, result_type=ReserveResult)
        return result

    @activity.defn(name=names.WORKSPACE_LIVE_RUNS)
    async def live_runs(self, workspace: str) -> list[str]:
        query = f'WorkflowType="AgentRun" AND ExecutionStatus="Running" AND AirlockWorkspace="{workspace}"'
        return [w.id async for w in self._client.list_workflows(query)]
