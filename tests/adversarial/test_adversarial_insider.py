"""The namespace insider: anyone who can start, signal, terminate or reset workflows in the namespace.

Each test drives the real server through the client as such a person would, and asserts on what a
user relies on: the back office's rows, the run's final state, and the switches in force.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import Engine
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError

from contracts.activity_io import RunContext
from contracts.models import CallStatus, Mode, RunInput, RunReport, RunState, TimelineEntry
from contracts.signing import load_key, new_key, public_key_text
from contracts.workspace_io import SwitchResult, WorkspaceView, control_workflow_id
from policy import load_policy
from runtime.settings import EXAMPLE_POLICY, Settings
from tests.adversarial_support import assert_not_stuck
from tests.conftest import READ, REFUND_120, AirlockCli, Runs, count_rows, policy_file, ready_view, run_input, switch
from tools.backoffice.db import refunds
from tools.registry import load_registry
from worker import build_worker
from workflows.memory import RunMemory
from workflows.workspace_control import ControlState


async def failure(handle: WorkflowHandle[Any, Any]) -> ApplicationError:
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError), cause
    return cause


async def failure_type(handle: WorkflowHandle[Any, Any]) -> str | None:
    return (await failure(handle)).type


async def task_failures(handle: WorkflowHandle[Any, Any]) -> int:
    history = await handle.fetch_history()
    return sum(1 for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED)


def forged_memory(**input_overrides: Any) -> RunMemory:
    """State as a continued run would carry it: here, a policy of the sender's choosing, with the
    refund deny rule gone, and nothing used of any budget."""
    policy = load_policy(EXAMPLE_POLICY)
    lenient = policy.model_copy(update={"tools": {}})
    context = RunContext(policy=lenient, policy_hash=lenient.content_hash(), catalog=load_registry().catalog())
    return RunMemory(
        input=RunInput.model_validate(run_input(**input_overrides)),
        context=context,
        mode=Mode.AUTO,
        started_at=datetime.now(UTC),
    )


async def test_a_run_started_with_carried_state_fails_fast_and_runs_nothing(
    client: Client, runs: Runs, settings: Settings, db: Engine
) -> None:
    """A second start argument shaped like a continue-as-new checkpoint (a lenient policy, fresh
    budgets) is refused: the run fails at once, non-retryably, and no refund is written."""
    big_refund = {"tool": "payments.create_refund", "args": {"order_id": "ORD-1002", "amount_usd": 900, "reason": "x"}}
    handle = await client.start_workflow(
        "AgentRun",
        args=[None, forged_memory(script=[big_refund])],
        id=f"forged-{uuid.uuid4().hex[:8]}",
        task_queue=settings.task_queue,
    )
    assert await failure_type(handle) == "ForgedCarriedState"
    assert await task_failures(handle) == 0
    assert count_rows(db, refunds) == 0


async def test_the_undo_agent_runs_only_under_undo_run(runs: Runs, db: Engine) -> None:
    """Starting an AgentRun as the `undo` agent directly (its capabilities include voiding
    refunds) is refused before any call is made."""
    handle = await runs.start(agent="undo", script=[READ])
    refused = await failure(handle)
    assert refused.type == "RunNotAllowed" and "UndoRun" in refused.message
    assert await task_failures(handle) == 0


async def test_a_forged_broadcast_cannot_lift_the_kill_switch(
    client: Client, runs: Runs, db: Engine, clean_switches: Any
) -> None:
    """A `workspace_switch` signal sent straight to a run, claiming a far newer generation with
    every switch off, does not let an approved write start while the kill switch is on; the real
    lift still does, although its generation is lower than the forged one."""
    handle = await runs.start(mode="approve", script=[REFUND_120])
    approval = (await runs.pending(handle)).pending_approvals[0].approval_id
    thrown = await switch(client, "kill_switch", True)
    assert thrown.accepted
    await handle.signal("approve", {"approval_id": approval, "approver": "u_bob"})
    await runs.wait_for(handle, lambda s: s.state is RunState.PAUSED)
    forged = {"generation": 10**9, "paused": False, "safe_mode": False, "by": "u_mallory", "reason": "all clear"}
    await handle.signal("workspace_switch", forged)
    await asyncio.sleep(1.0)
    status = await runs.status(handle)
    assert status.state is RunState.PAUSED and count_rows(db, refunds) == 0
    lifted = await switch(client, "kill_switch", False)
    assert lifted.accepted and (lifted.generation or 0) < 10**9
    report = await asyncio.wait_for(handle.result(), timeout=30)
    assert report.calls[0].status is CallStatus.EXECUTED and count_rows(db, refunds) == 1
    assert await task_failures(handle) == 0


async def test_the_kill_switch_holds_a_call_even_if_no_run_was_told(
    client: Client, runs: Runs, db: Engine, clean_switches: Any
) -> None:
    """The switch holds from its commit, not from its broadcast: with the control workflow
    terminated right after the switch (its broadcast lost), a run that was never told of it
    still starts no tool call; a new control workflow takes the switches from the store."""
    handle = await runs.start(mode="approve", script=[REFUND_120])
    approval = (await runs.pending(handle)).pending_approvals[0].approval_id
    control = client.get_workflow_handle(control_workflow_id("acme"))
    # Forget the run, as a control workflow that lost its state would: it is told of nothing.
    thrown = await switch(client, "kill_switch", True)
    await control.terminate("insider")
    await handle.signal("approve", {"approval_id": approval, "approver": "u_bob"})
    await asyncio.sleep(1.5)
    assert count_rows(db, refunds) == 0
    status = await runs.status(handle)
    assert status.state is RunState.PAUSED
    # A new control workflow (started by the next switch) starts from the switches in the store.
    restarted = await switch(client, "kill_switch", False)
    assert restarted.accepted and restarted.generation == (thrown.generation or 0) + 1
    report = await asyncio.wait_for(handle.result(), timeout=90)
    assert report.calls[0].status is CallStatus.EXECUTED and count_rows(db, refunds) == 1


async def test_terminating_the_control_workflow_does_not_lift_its_switches(
    client: Client, runs: Runs, db: Engine, clean_switches: Any, airlock_cli: AirlockCli
) -> None:
    """After the control workflow is terminated, a new run still finds the kill switch on, and
    the workspace's status (a new control workflow) shows it on."""
    await switch(client, "kill_switch", True)
    await client.get_workflow_handle(control_workflow_id("acme")).terminate("insider")
    handle = await runs.start(script=[READ])
    status = await runs.wait_for(handle, lambda s: s.state is RunState.PAUSED)
    assert status.used.tool_calls == 0
    await switch(client, "kill_switch", False)
    report = await asyncio.wait_for(handle.result(), timeout=90)
    assert report.state is RunState.COMPLETED and report.calls[0].status is CallStatus.EXECUTED
    view = await ready_view(client.get_workflow_handle(control_workflow_id("acme")))
    assert view.switches.paused is False


async def test_a_control_workflow_offered_forged_state_or_a_wrong_id_is_refused(
    client: Client, settings: Settings
) -> None:
    """Carried control state (switches off, spend forgotten) is accepted only from a real
    continue-as-new, and a control workflow runs only under its workspace's id."""
    context = forged_memory().context
    forged = await client.start_workflow(
        "WorkspaceControl",
        args=["sandbox", ControlState(workspace="sandbox", context=context)],
        id=control_workflow_id("sandbox"),
        task_queue=settings.control_task_queue or settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING,
    )
    assert await failure_type(forged) == "ForgedCarriedState"
    elsewhere = await client.start_workflow(
        "WorkspaceControl",
        "acme",
        id=f"workspace:elsewhere-{uuid.uuid4().hex[:6]}",
        task_queue=settings.control_task_queue or settings.task_queue,
    )
    assert await failure_type(elsewhere) == "NotTheControlWorkflow"


async def test_resuming_a_paused_run_is_for_its_pauser_admins_and_approvers(runs: Runs, db: Engine) -> None:
    """A resume by someone without a role that may resume changes nothing and is recorded; pausing
    again under another name does not make that name the pauser; an approver's resume lifts it."""
    handle = await runs.client.start_workflow(
        "AgentRun",
        run_input(script=[READ]),
        id=f"paused-{uuid.uuid4().hex[:8]}",
        task_queue=runs.settings.task_queue,
        start_signal="pause",
        start_signal_args=[{"by": "u_ops", "reason": "incident"}],
        result_type=RunReport,
    )
    await handle.signal("pause", {"by": "u_mallory", "reason": "mine now"})
    await handle.signal("resume", {"by": "u_mallory"})
    await handle.signal("resume", {"by": "u_dave", "reason": "no role"})
    status = await runs.wait_for(handle, lambda s: s.state is RunState.PAUSED and "refused" in (s.last_error or ""))
    assert status.paused_by == "u_ops" and "u_dave" in (status.last_error or "")
    timeline = await handle.query("timeline", result_type=list[TimelineEntry])
    refused = [e for e in timeline if e.kind == "resumed" and e.outcome == "refused"]
    assert [e.actor for e in refused] == ["u_mallory", "u_dave"]
    await handle.signal("resume", {"by": "u_bob", "reason": "checked"})
    report = await asyncio.wait_for(handle.result(), timeout=30)
    assert report.state is RunState.COMPLETED


@pytest.fixture
def vault_settings(tmp_path: Path, settings: Settings) -> Settings:
    """A workspace `vault` that requires signed approvals, with its control workflow on this
    test's worker, and u_carol (an admin) holding a key."""
    keys = tmp_path / "keys"
    new_key(keys, "u_carol")
    path = policy_file(
        tmp_path / "vault.yaml",
        workspaces={"vault": {"max_autonomy": "auto", "signed_approvals": True}},
        people={"u_carol": {"keys": [public_key_text(load_key(keys, "u_carol"))]}},
    )
    return settings.model_copy(
        update={"policy_path": path, "control_task_queue": settings.task_queue, "keys_dir": keys}
    )


@pytest_asyncio.fixture(loop_scope="session")
async def vault_worker(client: Client, vault_settings: Settings) -> AsyncIterator[None]:
    async with build_worker(client, vault_settings):
        yield


async def test_in_a_signed_workspace_a_switch_needs_an_admins_signature(
    client: Client,
    vault_settings: Settings,
    vault_worker: None,
    airlock_cli: AirlockCli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unsigned switch change is refused even from an admin's name; `airlock workspace` signs
    with the admin's key and is accepted."""
    monkeypatch.setenv("AIRLOCK_CONTROL_TASK_QUEUE", vault_settings.task_queue)
    monkeypatch.setenv("AIRLOCK_KEYS_DIR", str(vault_settings.keys_dir))
    monkeypatch.setenv("AIRLOCK_POLICY", str(vault_settings.policy_path))
    status, out = await airlock_cli("workspace", "pause", "vault", "--by", "u_carol", "--reason", "drill")
    assert status == 0, out
    handle = client.get_workflow_handle(control_workflow_id("vault"))
    unsigned: SwitchResult = await handle.execute_update(
        "switch", {"switch": "kill_switch", "on": False, "by": "u_carol", "reason": "forged"}, result_type=SwitchResult
    )
    assert not unsigned.accepted and "signed" in (unsigned.reason or "")
    view = await handle.query("state", result_type=WorkspaceView)
    assert view.switches.paused is True
    status, out = await airlock_cli("workspace", "resume", "vault", "--by", "u_carol", "--reason", "drill over")
    assert status == 0, out
    view = await handle.query("state", result_type=WorkspaceView)
    assert view.switches.paused is False


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ([], "takes one argument"),
        (["acme", None, "extra"], "got 3"),
        ([42], "workspace's name"),
        ([{"workspace": "acme"}], "workspace's name"),
    ],
)
async def test_a_control_workflow_started_with_malformed_arguments_fails_at_once(
    client: Client, settings: Settings, args: list[Any], problem: str
) -> None:
    """A `WorkspaceControl` started with no argument, too many, or something other than a
    workspace name fails at once, non-retryably, naming the problem, instead of retrying its first
    workflow task forever."""
    handle = await client.start_workflow(
        "WorkspaceControl",
        args=args,
        id=control_workflow_id(f"malformed-{uuid.uuid4().hex[:6]}"),
        task_queue=settings.control_task_queue or settings.task_queue,
    )
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(handle.result(), 30)
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "InvalidRunInput" and problem in cause.message
    await assert_not_stuck(client, handle)
