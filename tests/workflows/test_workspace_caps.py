"""Workspace caps: concurrent runs and daily model spend, held by the workspace control workflow.

Each test uses a workspace of its own (its control workflow runs on the test's worker with the
test's policy), so spend and slots never leak between tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError

from activities.control_store import ControlStore, SpendLedger
from contracts.models import FINAL_STATES, RunReport, RunState
from contracts.workspace_io import ReserveResult, SpendView, WorkspaceView, control_workflow_id
from runtime.settings import Settings
from tests.conftest import (
    READ,
    REFUND_120,
    AirlockCli,
    Runs,
    policy_file,
    recorded_openai_provider,
    reserve_request,
    run_input,
    start_control,
)
from worker import build_worker


def capped(tmp_path: Path, settings: Settings, **limits: Any) -> tuple[str, Settings]:
    """A fresh workspace with these limits, and settings whose worker also runs its control."""
    workspace = f"cap-{uuid.uuid4().hex[:8]}"
    path = policy_file(tmp_path / "capped.yaml", workspaces={workspace: {"max_autonomy": "auto", "limits": limits}})
    return workspace, settings.model_copy(update={"policy_path": path, "control_task_queue": None})


async def control_view(client: Client, workspace: str) -> WorkspaceView:
    return await client.get_workflow_handle(control_workflow_id(workspace)).query("state", result_type=WorkspaceView)


async def control_view_when(client: Client, workspace: str, reached: Callable[[WorkspaceView], bool]) -> WorkspaceView:
    """The control workflow's state once `reached` holds (or after 10 s, for the caller to assert)."""
    for _ in range(200):
        view = await control_view(client, workspace)
        if reached(view):
            return view
        await asyncio.sleep(0.05)
    return view


async def test_a_burst_of_starts_under_a_cap_is_admitted_on_a_worker_with_fewer_slots(
    client: Client, settings: Settings, tmp_path: Path
) -> None:
    """Eight runs start at once under a cap, on a worker that holds two workflow tasks at once
    and runs the control workflow on the runs' own queue, as deployed by default: every run is
    admitted and completes. A join that kept its run's workflow task open while it waited for
    admission left the control workflow no slot to admit anyone with, and the burst stalled."""
    workspace, settings = capped(tmp_path, settings, max_concurrent_runs=100)
    settings = settings.model_copy(update={"max_concurrent_workflow_tasks": 2})
    async with build_worker(client, settings):
        runs = Runs(client, settings)
        handles = await asyncio.gather(*(runs.start(workspace=workspace, script=[READ]) for _ in range(8)))
        try:
            reports = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout=60)
        finally:
            # A stalled burst must fail the test, not hang the worker's shutdown on it.
            for h in handles:
                with contextlib.suppress(RPCError):
                    await h.terminate("test over")
    assert [r.state for r in reports] == [RunState.COMPLETED] * 8
    assert all(r.calls[0].status.value == "executed" for r in reports)


async def test_concurrency_cap_admits_exactly_the_cap_and_frees_slots_as_runs_end(
    client: Client, settings: Settings, tmp_path: Path
) -> None:
    """Five runs start at once under a cap of two: exactly two run; the three others end
    `budget_exhausted` with the reason before any step. A slot frees when a run ends."""
    workspace, settings = capped(tmp_path, settings, max_concurrent_runs=2)
    async with build_worker(client, settings):
        runs = Runs(client, settings)
        handles = await asyncio.gather(
            *(runs.start(workspace=workspace, mode="approve", script=[REFUND_120]) for _ in range(5))
        )

        async def outcome(h: WorkflowHandle[Any, RunReport]) -> RunReport | None:
            """None for an admitted run (it waits for approval), the report of a refused one."""
            status = await runs.wait_for(h, lambda s: bool(s.pending_approvals) or s.state in FINAL_STATES)
            return None if status.pending_approvals else await h.result()

        outcomes = await asyncio.gather(*(outcome(h) for h in handles))
        refused = [r for r in outcomes if r is not None]
        admitted = [h for h, r in zip(handles, outcomes, strict=True) if r is None]
        refused_ids = [h.id for h, r in zip(handles, outcomes, strict=True) if r is not None]
        assert len(admitted) == 2 and len(refused) == 3
        for report in refused:
            assert report.state is RunState.BUDGET_EXHAUSTED
            assert report.reason == (
                f"workspace {workspace}: 2 of 2 concurrent runs are running (max_concurrent_runs); "
                "start it again when one ends"
            )
            assert report.calls == [] and report.used.steps == 0

        await admitted[0].cancel()
        assert (await admitted[0].result()).state is RunState.STOPPED
        # The slot frees once the server confirms that the run has ended.
        view = await control_view_when(client, workspace, lambda v: v.runs == 1)
        assert view.runs == 1 and view.max_concurrent_runs == 2
        # Started again under the id of a refused run, as the refusal suggests: admitted now.
        latecomer = await runs.start_raw(
            run_input(workspace=workspace, mode="approve", script=[REFUND_120]), workflow_id=refused_ids[0]
        )
        assert (await runs.pending(latecomer)).pending_approvals
        for h in (admitted[1], latecomer):
            await h.cancel()
            await h.result()
        assert (await control_view_when(client, workspace, lambda v: v.runs == 0)).runs == 0


async def test_racing_reservations_never_pass_the_daily_cap(client: Client, settings: Settings, tmp_path: Path) -> None:
    """Eight reservations of 0.30 USD race for a 1.00 USD cap: exactly three are granted. The
    reservation that would pass the cap is refused, and nothing before it."""
    workspace, settings = capped(tmp_path, settings, daily_spend_usd=1.0)
    async with build_worker(client, settings):
        control = await start_control(client, workspace, settings.task_queue)

        async def reserve(n: int, usd: float, agent: str = "support") -> ReserveResult:
            return await control.execute_update(
                "reserve", reserve_request(workspace, n, usd, agent), result_type=ReserveResult
            )

        results = await asyncio.gather(*(reserve(n, 0.30) for n in range(8)))
        granted = [n for n, r in enumerate(results) if r.granted]
        assert len(granted) == 3
        refusal = next(r for r in results if not r.granted)
        assert refusal.reason is not None and "would pass the cap of 1.000000 USD" in refusal.reason

        # A retried reservation is answered as the first time and held once.
        assert (await reserve(granted[0], 0.30)).granted
        assert (await control.query("spend", result_type=SpendView)).reserved_usd == pytest.approx(0.90)

        for n, actual in zip(granted, (0.25, 0.25, 0.0), strict=True):
            await control.signal("settle", {"reservation_id": f"r-{n}", "usd": actual})
        assert not (await reserve(100, 0.51)).granted  # 0.50 spent + 0.51 > 1.00
        assert (await reserve(101, 0.50, agent="triage")).granted  # exactly at the cap
        await control.signal("settle", {"reservation_id": "r-101", "usd": 0.5})

        spend = await control.query("spend", result_type=SpendView)
    today = spend.days[0]
    assert spend.reserved_usd == 0
    assert today.spent_usd == pytest.approx(1.0) and today.cap_usd == 1.0
    assert today.refused == 5 + 1
    assert today.by_agent == pytest.approx({"support": 0.5, "triage": 0.5})
    assert today.by_requester == pytest.approx({"u_alice": 1.0})
    assert today.by_run == pytest.approx(
        {f"run-{granted[0]}": 0.25, f"run-{granted[1]}": 0.25, f"run-{granted[2]}": 0.0, "run-101": 0.5}
    )


async def test_a_run_stops_at_the_model_call_that_would_pass_the_daily_cap(
    client: Client, settings: Settings, tmp_path: Path, airlock_cli: AirlockCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every paid model call holds its estimate in the control store first and settles its real
    cost after. The third call's estimate would pass the cap: it is never made, and the run ends
    `budget_exhausted` with the reason; `airlock workspace spend` attributes what was spent."""
    workspace, settings = capped(tmp_path, settings, daily_spend_usd=0.00025, model_call_estimate_usd=0.0001)
    # The command reads the policy that names the workspace, as the worker does.
    monkeypatch.setenv("AIRLOCK_POLICY", str(settings.policy_path))
    async with build_worker(client, settings, openai=recorded_openai_provider(settings)):
        handle = await Runs(client, settings).start(
            workspace=workspace,
            mode="auto",
            model={"provider": "openai", "name": "gpt-4o-mini"},
            budget={"max_steps": 10, "max_identical_calls": 10},
        )
        report = await handle.result()
        spend = SpendLedger(ControlStore.open(settings.control_db).engine).view(workspace)
        status, text = await airlock_cli("workspace", "spend", workspace)
        assert status == 0
    assert report.state is RunState.BUDGET_EXHAUSTED
    assert report.reason is not None and report.reason.startswith(f"workspace {workspace} daily spend cap")
    assert len(report.cost_by_step) == 2  # the third model call was refused, not made
    today = spend.days[0]
    assert today.spent_usd == pytest.approx(report.used.cost_usd) and today.refused == 1
    assert today.by_run == pytest.approx({handle.id: report.used.cost_usd})
    assert today.by_agent == pytest.approx({"support": report.used.cost_usd})
    assert spend.reserved_usd == 0

    assert f"{report.used.cost_usd:.6f} USD of 0.000250 cap; 1 model call(s) refused" in text
    assert any(line.split()[:2] == ["requester", "u_alice"] for line in text.splitlines())
    assert any(line.split()[:2] == ["run", handle.id] for line in text.splitlines())


async def test_a_run_ends_normally_when_its_control_workflow_is_gone(
    client: Client, settings: Settings, tmp_path: Path
) -> None:
    """Signing off is a courtesy to the control workflow: if it was terminated, the run still
    ends with its report."""
    workspace, settings = capped(tmp_path, settings, max_concurrent_runs=2)
    async with build_worker(client, settings):
        runs = Runs(client, settings)
        handle = await runs.start(workspace=workspace, mode="approve", script=[REFUND_120])
        approval_id = (await runs.pending(handle)).pending_approvals[0].approval_id
        await client.get_workflow_handle(control_workflow_id(workspace)).terminate("operator error")
        await handle.signal("approve", {"approval_id": approval_id, "approver": "u_bob"})
        report = await handle.result()
    assert report.state is RunState.COMPLETED


async def test_a_workspaces_spend_survives_its_control_workflow(
    client: Client, settings: Settings, tmp_path: Path
) -> None:
    """Model spend is held and settled in the control store by the model calls themselves:
    terminating the workspace's control workflow (whose memory held the day's spend) does not
    reset the cap, and a forged `settle` sent to it changes nothing."""
    workspace, settings = capped(tmp_path, settings, daily_spend_usd=0.00025, model_call_estimate_usd=0.0001)
    paid = {
        "model": {"provider": "openai", "name": "gpt-4o-mini"},
        "budget": {"max_steps": 10, "max_identical_calls": 10},
    }
    async with build_worker(client, settings, openai=recorded_openai_provider(settings)):
        runs = Runs(client, settings)
        first = await (await runs.start(workspace=workspace, mode="auto", **paid)).result()
        assert first.state is RunState.BUDGET_EXHAUSTED and len(first.cost_by_step) == 2
        control = client.get_workflow_handle(control_workflow_id(workspace))
        await control.signal("settle", {"reservation_id": "anything", "usd": 0})
        await control.terminate("insider")
        second = await (await runs.start(workspace=workspace, mode="auto", **paid)).result()
    assert second.state is RunState.BUDGET_EXHAUSTED and second.cost_by_step == []
    assert second.reason is not None and "daily spend cap" in second.reason
    spend = SpendLedger(ControlStore.open(settings.control_db).engine).view(workspace)
    assert spend.days[0].spent_usd == pytest.approx(first.used.cost_usd) and spend.days[0].refused == 2
    assert spend.reserved_usd == 0


def test_holds_racing_for_the_last_dollars_never_pass_the_cap(tmp_path: Path) -> None:
    """Eight threads hold 0.30 USD each against a 1.00 USD cap in one store: exactly three get it.
    Settled holds charge their real cost; a hold its worker abandoned counts at its estimate."""
    from concurrent.futures import ThreadPoolExecutor

    from activities.control_store import HOLD_EXPIRES_S
    from contracts.workspace_io import SpendHold

    now = [1_000_000.0]
    ledger = SpendLedger(ControlStore.open(str(tmp_path / "control.db")).engine, clock=lambda: now[0])

    def hold(n: int, usd: float = 0.30) -> str | None:
        return ledger.hold(
            SpendHold(
                workspace="w",
                reservation_id=f"r-{n}",
                day="2026-12-03",
                run_id=f"run-{n}",
                agent="support",
                requested_by="u_alice",
                usd=usd,
                cap_usd=1.0,
            )
        )

    with ThreadPoolExecutor(8) as pool:
        refusals = list(pool.map(hold, range(8)))
    granted = [n for n, r in enumerate(refusals) if r is None]
    assert len(granted) == 3
    assert all("would pass the cap of 1.000000 USD" in (r or "") for r in refusals if r is not None)
    assert hold(granted[0]) is None  # the same hold asked again: held once
    assert ledger.view("w").reserved_usd == pytest.approx(0.90)
    ledger.settle(f"r-{granted[0]}", 0.25)
    ledger.settle(f"r-{granted[0]}", 0.25)  # settled once
    view = ledger.view("w").days[0]
    assert view.spent_usd == pytest.approx(0.25) and view.by_run == {f"run-{granted[0]}": 0.25}
    # The two other holds are abandoned: once they expire they count at their estimate.
    now[0] += HOLD_EXPIRES_S + 1
    assert hold(50, 0.16) is not None  # 0.25 + 0.60 + 0.16 > 1.00
    assert ledger.view("w").days[0].spent_usd == pytest.approx(0.85)
