"""The workspace control plane: a kill switch and safe mode that reach runs already in flight."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
from sqlalchemy import Engine
from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.worker import Worker

from contracts.models import FINAL_STATES, CallStatus, RunReport, RunState
from contracts.workspace_io import (
    SWITCHES_MEMO,
    ReserveResult,
    SpendView,
    Switches,
    SwitchResult,
    WorkspaceView,
    control_workflow_id,
)
from runtime.settings import Settings
from tests.conftest import READ, AirlockCli, Runs, call, count_rows, ready_view, switch
from tools.backoffice.db import refunds
from worker import build_worker

REFUND_120 = call("payments.create_refund", order_id="ORD-1002", amount_usd=120, reason="late")
REFUND_20 = call("payments.create_refund", order_id="ORD-1002", amount_usd=20, reason="late")


async def acknowledged(client: Client, generation: int, runs: int) -> WorkspaceView:
    handle = client.get_workflow_handle(control_workflow_id("acme"))
    for _ in range(400):
        view = await handle.query("state", result_type=WorkspaceView)
        if view.switches.generation == generation and view.acknowledged >= runs:
            return view
        await asyncio.sleep(0.025)
    raise AssertionError(f"not acknowledged: {view}")


async def approved_until_done(runs: Runs, handle: WorkflowHandle[Any, Any], approved: str) -> RunReport:
    """Waits for the run to end, approving each new round of approval it asks for."""
    seen = {approved}
    while True:
        status = await runs.wait_for(
            handle, lambda s: s.state in FINAL_STATES or any(a.approval_id not in seen for a in s.pending_approvals)
        )
        if status.state in FINAL_STATES:
            report: RunReport = await handle.result()
            return report
        fresh = next(a.approval_id for a in status.pending_approvals if a.approval_id not in seen)
        seen.add(fresh)
        await handle.signal("approve", {"approval_id": fresh, "approver": "u_bob"})


async def published_switches(client: Client, workspace: str = "acme") -> Switches:
    described = await client.get_workflow_handle(control_workflow_id(workspace)).describe()
    switches: Switches = await described.memo_value(SWITCHES_MEMO, type_hint=Switches)
    return switches


@workflow.defn(name="SwitchListener", sandboxed=False)
class SwitchListener:
    """Stands in for a run that registers by hand: records every switch it is told of."""

    def __init__(self) -> None:
        self.heard: list[Switches] = []

    @workflow.run
    async def run(self, until_generation: int) -> list[Switches]:
        await workflow.wait_condition(lambda: any(s.generation >= until_generation for s in self.heard))
        return self.heard

    @workflow.signal(name="workspace_switch")
    def workspace_switch(self, switches: Switches) -> None:
        self.heard.append(switches)


async def test_kill_switch_stops_writes_in_runs_started_before_it(
    runs: Runs, client: Client, db: Engine, clean_switches: Any
) -> None:
    """After every run acknowledged the switch, an approved write does not start; resume lets it."""
    handles = [await runs.start(mode="approve", script=[REFUND_120]) for _ in range(3)]
    pendings = [await runs.pending(h) for h in handles]
    result = await switch(client, "kill_switch", True)
    assert result.accepted and result.runs_notified >= 3
    view = await acknowledged(client, result.generation, 3)
    assert view.last_ack_after_s is not None
    for h, p in zip(handles, pendings, strict=True):
        await h.signal("approve", {"approval_id": p.pending_approvals[0].approval_id, "approver": "u_bob"})
    status = await runs.wait_for(handles[0], lambda s: s.state is RunState.PAUSED)
    assert "workspace kill switch" in (status.paused_by or "")
    await asyncio.sleep(0.3)
    assert count_rows(db, refunds) == 0
    await switch(client, "kill_switch", False)
    # The three refunds are of one order: a run that goes after another sees less left refundable,
    # and asks again (an approval for old facts does not carry over).
    reports = [
        await approved_until_done(runs, h, p.pending_approvals[0].approval_id)
        for h, p in zip(handles, pendings, strict=True)
    ]
    assert all(r.calls[0].status is CallStatus.EXECUTED for r in reports)
    assert count_rows(db, refunds) == 3


async def test_safe_mode_refuses_writes_holds_approvals_and_lets_reads_through(
    runs: Runs, client: Client, db: Engine, clean_switches: Any
) -> None:
    """Writes decided after the switch are refused with reason safe_mode; a write approved while
    safe mode is on waits for it to end; reads go on."""
    held = await runs.start(mode="approve", script=[REFUND_120])
    approval = (await runs.pending(held)).pending_approvals[0].approval_id
    result = await switch(client, "safe_mode", True)
    await acknowledged(client, result.generation, 1)
    await held.signal("approve", {"approval_id": approval, "approver": "u_bob"})
    refused = await runs.start(script=[REFUND_20, call("orders.get_order", order_id="ORD-1002")])
    report = await refused.result()
    assert report.calls[0].status is CallStatus.DENIED and report.calls[0].error == "safe_mode"
    assert report.calls[0].decision.rule == "workspace.safe_mode"
    assert report.calls[1].status is CallStatus.EXECUTED
    await asyncio.sleep(0.3)
    assert count_rows(db, refunds) == 0
    await switch(client, "safe_mode", False)
    held_report = await held.result()
    assert held_report.calls[0].status is CallStatus.EXECUTED
    assert count_rows(db, refunds) == 1


async def test_only_an_admin_throws_a_switch(
    client: Client, runs: Runs, clean_switches: Any, airlock_cli: AirlockCli
) -> None:
    """u_bob is an approver, not an admin: refused, recorded, nothing changes."""
    refused = await switch(client, "kill_switch", True, by="u_bob")
    assert not refused.accepted and refused.reason == "u_bob lacks the admin role that workspace switches need"
    view = await client.get_workflow_handle(control_workflow_id("acme")).query("state", result_type=WorkspaceView)
    assert not view.switches.paused and "u_bob lacks the admin role" in view.refused[-1]
    status, _ = await airlock_cli("workspace", "pause", "acme", "--by", "u_dave")
    assert status == 1
    status, out = await airlock_cli("workspace", "status", "acme")
    assert status == 0 and '"paused": false' in out


async def test_the_control_workflow_continues_as_new_and_keeps_its_state(client: Client, settings: Settings) -> None:
    """Switches, registered runs, refusals, the spend ledger and open reservations survive the
    control workflow's history checkpoints."""
    short = settings.model_copy(update={"control_events_per_history": 30, "task_queue": f"{settings.task_queue}-ctl"})
    async with build_worker(client, short):
        await _checkpointed_control(client, short)


async def _checkpointed_control(client: Client, settings: Settings) -> None:
    handle = await client.start_workflow(
        "WorkspaceControl",
        "sandbox",
        id=control_workflow_id("sandbox"),
        task_queue=settings.task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING,
    )
    # The store keeps the switches of earlier control workflows of this workspace.
    start_generation = (await ready_view(handle)).switches.generation
    first_run = handle.result_run_id
    # Spend: one call settled, one reservation still open when the checkpoint comes.
    reserve = {"workspace": "sandbox", "agent": "support", "requested_by": "u_alice", "usd": 0.2, "cap_usd": 1.0}
    for n in (1, 2):
        granted = await handle.execute_update(
            "reserve", {**reserve, "run_id": f"run-{n}", "reservation_id": f"r-{n}"}, result_type=ReserveResult
        )
        assert granted.granted
    await handle.signal("settle", {"reservation_id": "r-1", "usd": 0.15})
    for i in range(8):
        body = {"switch": "safe_mode", "on": i % 2 == 0, "by": "u_carol" if i != 3 else "u_dave", "reason": f"r{i}"}
        await handle.execute_update("switch", body, result_type=SwitchResult)
    for _ in range(200):  # the checkpoint first asks visibility which runs still live
        described = await handle.describe()
        if described.run_id != first_run:
            break
        await asyncio.sleep(0.05)
    assert described.run_id != first_run
    view = await handle.query("state", result_type=WorkspaceView)
    assert view.switches.generation == start_generation + 7 and view.switches.safe_mode is False
    # The continued run publishes its switches in its first task, which a loaded machine may take
    # a while to run: until then its memo has no switches at all.
    published: Switches | None = None
    deadline = time.monotonic() + 60
    while published != view.switches and time.monotonic() < deadline:
        with contextlib.suppress(KeyError):
            published = await published_switches(client, "sandbox")
        await asyncio.sleep(0.05)
    assert published == view.switches
    assert any("u_dave lacks the admin role" in r for r in view.refused)
    spend = await handle.query("spend", result_type=SpendView)
    assert spend.reserved_usd == pytest.approx(0.2)
    assert spend.days[0].spent_usd == pytest.approx(0.15) and spend.days[0].by_run == {"run-1": 0.15}
    # The open reservation still holds its money: 0.15 spent + 0.2 held + 0.7 > 1.0.
    refused = await handle.execute_update(
        "reserve", {**reserve, "usd": 0.7, "run_id": "run-3", "reservation_id": "r-3"}, result_type=ReserveResult
    )
    assert not refused.granted
    await handle.terminate("test done")


async def test_a_run_is_told_of_a_switch_it_did_not_read_before_registering(
    client: Client, runs: Runs, settings: Settings, clean_switches: Any
) -> None:
    """A starting run reads the switches from the control workflow's memo, then registers saying
    which generation it read. One that read an older generation is told the current one at once;
    one that read the current one is told only of later changes."""
    paused = await switch(client, "kill_switch", True)
    assert paused.generation is not None
    published = await published_switches(client)
    assert published.generation == paused.generation and published.paused and published.by == "u_carol"

    # A real run started now reads the kill switch before its first tool call.
    started_after = await runs.start(script=[call("orders.get_order", order_id="ORD-1001")])
    status = await runs.wait_for(started_after, lambda s: s.state is RunState.PAUSED)
    assert "workspace kill switch" in (status.paused_by or "") and status.used.tool_calls == 0

    queue = f"{settings.task_queue}-listeners"
    async with Worker(client, task_queue=queue, workflows=[SwitchListener]):
        behind = await client.start_workflow(
            SwitchListener.run, paused.generation, id=f"listener-behind-{paused.generation}", task_queue=queue
        )
        current = await client.start_workflow(
            SwitchListener.run, paused.generation + 1, id=f"listener-current-{paused.generation}", task_queue=queue
        )
        control = client.get_workflow_handle(control_workflow_id("acme"))
        # One by the batch signal that joins use, one by the single registration.
        await control.signal(
            "register_batch",
            {"registrations": [{"workspace": "acme", "run_id": behind.id, "read_generation": paused.generation - 1}]},
        )
        await control.signal(
            "register", {"workspace": "acme", "run_id": current.id, "read_generation": paused.generation}
        )
        heard = await asyncio.wait_for(behind.result(), timeout=10)
        assert [(s.generation, s.paused) for s in heard] == [(paused.generation, True)]
        resumed = await switch(client, "kill_switch", False)
        heard = await asyncio.wait_for(current.result(), timeout=10)
        assert [(s.generation, s.paused) for s in heard] == [(resumed.generation, False)]
    report = await started_after.result()
    assert report.state is RunState.COMPLETED and report.calls[0].status is CallStatus.EXECUTED


async def test_a_run_that_cannot_join_its_workspace_says_what_it_waits_for(
    client: Client, settings: Settings, tmp_path: Any
) -> None:
    """A run whose worker cannot read the control store as it starts answers `status` with what
    it is doing and what may hold it, not only "starting"; it starts once the store reads."""
    from sqlalchemy import create_engine, text
    from temporalio.client import WorkflowQueryFailedError

    from activities.control_store import metadata

    store = str(tmp_path / "unreadable-at-start.db")
    own = settings.model_copy(update={"control_db": store})
    async with build_worker(client, own):
        engine = create_engine(f"sqlite:///{store}")
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE airlock_workspace_switches"))
        runs = Runs(client, own)
        handle = await runs.start(script=[READ])
        message = ""
        for _ in range(100):
            try:
                await runs.status(handle)
            except WorkflowQueryFailedError as e:
                message = str(e)
                if "joins workspace" in message:
                    break
            await asyncio.sleep(0.05)
        assert "the run is starting: it pins its policy and joins workspace acme's control plane" in message
        assert "the worker cannot reach the control store or the control workflow" in message
        metadata.create_all(engine)
        report = await asyncio.wait_for(handle.result(), 60)
        assert report.state.value == "completed"


async def test_a_write_waits_while_the_control_store_cannot_be_read_and_runs_once_it_can(
    client: Client, settings: Settings, db: Engine, tmp_path: Any
) -> None:
    """Fail closed: while the worker cannot read its control store, an approved write does not
    start, the run's workflow task does not fail, and `status` says why the run is held; once the
    store reads again, the write runs exactly once."""
    from sqlalchemy import create_engine, text

    from activities.control_store import metadata
    from tests.adversarial_support import assert_not_stuck

    store = str(tmp_path / "unreadable-control.db")
    own = settings.model_copy(update={"control_db": store})
    async with build_worker(client, own):
        runs = Runs(client, own)
        handle = await runs.start(mode="approve", script=[REFUND_120])
        approval = (await runs.pending(handle)).pending_approvals[0].approval_id
        engine = create_engine(f"sqlite:///{store}")
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE airlock_workspace_switches"))
        await handle.signal("approve", {"approval_id": approval, "approver": "u_bob"})
        status = await runs.wait_for(handle, lambda s: "control store cannot be read" in (s.last_error or ""))
        assert "OperationalError" in (status.last_error or "")
        assert status.held is not None and status.held.kind == "control_store"
        assert status.held.released_by.startswith("the control store (AIRLOCK_CONTROL_DB) answering again")
        await asyncio.sleep(0.5)
        assert count_rows(db, refunds) == 0
        await assert_not_stuck(client, handle)
        metadata.create_all(engine)
        report = await asyncio.wait_for(handle.result(), 30)
        assert report.calls[0].status is CallStatus.EXECUTED
        assert count_rows(db, refunds) == 1
        await assert_not_stuck(client, handle)
